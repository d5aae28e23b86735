"""The figway flow: runs one figway run's DAG as Prefect tasks, resuming where figway's
record says the run stands.

A node is submitted only when all of its upstream nodes are done (the
notes measured this faster than parking waiting tasks on ``wait_for``), so one
level's nodes run in parallel in the flow's thread pool. Each task calls the
shared node runtime, which records every transition in figway's database;
Prefect's own retries (``retries``/``retry_delay_seconds`` per node) drive the
attempts. A flow that returned normally would end Completed even when a node
failed, so the flow returns a Failed state when any node failed for good.

Resuming: the flow reads the run's nodes from figway's record before it starts any,
so a flow run started after an earlier one crashed (the gateway's reconciler starts
it, see ``executor.py``) skips the nodes that are done, continues the attempt numbers
of the others within their retry budget, and fails a node whose lost attempt was its
last. While it runs, a heartbeat thread keeps the run's record fresh, so a run whose
flow-run process lives is never taken for a lost one between nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import task_run
from prefect.states import Cancelled, Failed

from backends.model.errors import FigwayError, NodeAttemptFailedError
from backends.model.status import RUN_TERMINAL, NodeStatus, RunStatus
from backends.model.workflow import RunPlan
from backends.prefect.resumes import lost_attempt_error
from backends.prefect.secrets import prefect_secrets
from backends.runtime.attempts import NodeRuntime, Outcome
from backends.runtime.bootstrap import current_runtime
from backends.store import LogRecord, RunView, Store

__all__ = ["FLOW_HEARTBEAT_SECONDS", "ResumePoint", "figway_run", "resume_point", "run_node"]

log = logging.getLogger(__name__)

_KILLED = (RunStatus.CANCELLING, RunStatus.CANCELLED)
#: How often a running flow marks its run alive (well inside FIGWAY_NODE_SILENCE_SECONDS).
FLOW_HEARTBEAT_SECONDS = 2.0
#: Node statuses a resumed flow has nothing to do for (a failed one's downstream is skipped).
_SETTLED = (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED, NodeStatus.CANCELLED)


@task(name="figway-node", cache_policy=NO_CACHE, persist_result=False)
def run_node(job_run_id: str, node_id: str, attempts_before: int = 0) -> str:
    """One attempt of one node. The attempt number continues from the attempts earlier
    flow runs made (``attempts_before``), counted on by Prefect's run_count."""
    logger = get_run_logger()

    def to_prefect(record: LogRecord) -> None:
        # The node's lines also show in the Prefect UI, under this task run.
        logger.log(logging.getLevelNamesMapping().get(record.level, logging.INFO), record.message)

    result = current_runtime().execute(
        job_run_id=job_run_id,
        node_id=node_id,
        attempt=attempts_before + task_run.run_count,
        mirror=to_prefect,
        secrets=prefect_secrets(),
    )
    if result.outcome in (Outcome.RETRY, Outcome.FAILED):
        raise NodeAttemptFailedError(result.error)
    return result.outcome.value


@dataclass
class ResumePoint:
    """Where a (possibly resumed) flow run starts: what is done, failed, and how far on."""

    settled: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    doomed: set[str] = field(default_factory=set)  # downstream of a failure: already skipped
    attempts_before: dict[str, int] = field(default_factory=dict)


def resume_point(store: Store, plan: RunPlan, run: RunView) -> ResumePoint:
    """Read figway's record of the run; settle attempts an earlier flow run lost."""
    point = ResumePoint()
    for node_id, node in run.nodes.items():
        if node.status in _SETTLED:
            point.settled.add(node_id)
        elif node.status is NodeStatus.FAILED:
            point.failed.append(node_id)
            point.doomed |= plan.downstream_of(node_id)
        elif node.status in (NodeStatus.RUNNING, NodeStatus.RETRYING):
            # Left by a flow run that is gone (this one is the run's only live flow run).
            budget = plan.nodes[node_id].retries + 1
            if node.attempts >= budget:
                if node.status is NodeStatus.RUNNING:
                    store.record_node(
                        job_run_id=run.job_run_id,
                        node_id=node_id,
                        attempt=node.attempts,
                        status=NodeStatus.FAILED,
                        error=lost_attempt_error(node.attempts, retried=False),
                    )
                point.failed.append(node_id)
                point.doomed |= plan.downstream_of(node_id)
            else:
                point.attempts_before[node_id] = node.attempts
    return point


@contextmanager
def _flow_heartbeat(runtime: NodeRuntime, job_run_id: str) -> Iterator[None]:
    """Keep the run's record fresh while this flow-run process orchestrates it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(FLOW_HEARTBEAT_SECONDS):
            try:
                runtime.store.touch_run(job_run_id=job_run_id)
            except FigwayError:
                log.warning("flow heartbeat for %s failed", job_run_id)

    thread = threading.Thread(target=beat, name=f"flow-heartbeat-{job_run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@flow(name="figway-run", persist_result=False, log_prints=False)
def figway_run(job_run_id: str) -> State[None] | None:
    """Run every node of a figway run that is not done yet, in dependency order."""
    runtime = current_runtime()
    plan = runtime.store.load_plan(job_run_id=job_run_id)
    run = runtime.store.get_run(job_run_id=job_run_id)
    if plan is None or run is None:
        raise FigwayError(f"figway has no run {job_run_id!r}")
    if run.status in RUN_TERMINAL or run.status in _KILLED:  # a late resume: nothing to do
        ended = [n for n, node in run.nodes.items() if node.status is NodeStatus.FAILED]
        return _outcome(runtime, job_run_id, ended)
    with _flow_heartbeat(runtime, job_run_id):
        failed = _walk(runtime, plan, resume_point(runtime.store, plan, run))
    _task_runs_agree(runtime, job_run_id)
    return _outcome(runtime, job_run_id, failed)


def _walk(runtime: NodeRuntime, plan: RunPlan, point: ResumePoint) -> list[str]:
    """Run the nodes left, each once its parents are done; returns the nodes that failed."""
    job_run_id = plan.job_run_id
    order = TopologicalSorter(plan.upstream)
    order.prepare()
    running: dict[PrefectFuture[str], str] = {}
    failed, doomed = list(point.failed), set(point.doomed)
    killed = False
    while order.is_active() and not killed:
        for node_id in order.get_ready():
            if node_id in doomed or node_id in point.settled or node_id in point.failed:
                order.done(node_id)
                continue
            spec = plan.nodes[node_id]
            before = point.attempts_before.get(node_id, 0)
            options = run_node.with_options(
                task_run_name=node_id,
                retries=spec.retries - before,
                retry_delay_seconds=spec.retry_delay_seconds,
            )
            running[options.submit(job_run_id, node_id, before)] = node_id
        if not running:
            continue  # only finished nodes were ready; the sorter hands out their children next
        finished = next(as_completed(list(running)))
        node_id = running.pop(finished)
        # as_completed can hand over a future whose cached state still reads Pending;
        # wait() settles it, so a failed node is seen as failed.
        finished.wait()
        if finished.state.is_failed():
            failed.append(node_id)
            doomed |= plan.downstream_of(node_id)
        elif finished.result() != Outcome.SUCCEEDED:
            # Cancelled or refused: the run was killed, so start nothing more.
            killed = runtime.store.run_status(job_run_id=job_run_id) in _KILLED
        order.done(node_id)
    for future in running:
        future.wait()  # let nodes already started stop on their own before the flow ends
    return failed


def _task_runs_agree(runtime: NodeRuntime, job_run_id: str) -> None:
    """Give this flow run's unfinished task runs the final state figway recorded.

    Task-run states reach Prefect as events, and events sent while the server was
    down are lost: after an outage a finished node's task run would read Running
    forever. figway's record is the truth; Prefect's is made to agree with it. A
    task run that only lags (its event is on the way) gets the state it was about
    to get anyway. Best effort: failing here must not fail a run whose nodes ended.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import TERMINAL_STATES
    from prefect.runtime import flow_run
    from prefect.states import Cancelled, Completed, Crashed

    flow_run_id = flow_run.get_id()
    if flow_run_id is None:
        return
    try:
        run = runtime.store.get_run(job_run_id=job_run_id)
        nodes = run.nodes if run is not None else {}
        with get_client(sync_client=True) as client:
            for task_run in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            ):
                if task_run.state_type in TERMINAL_STATES:
                    continue
                node = nodes.get(task_run.name)
                status = node.status if node is not None else None
                said = f"figway recorded node {task_run.name} {status}" if status else ""
                if status is NodeStatus.SUCCEEDED:
                    state: State[None] = Completed(message=said)
                elif status in (NodeStatus.FAILED, NodeStatus.SKIPPED):
                    state = Failed(message=said)
                elif status is NodeStatus.CANCELLED:
                    state = Cancelled(message=said)
                else:
                    state = Crashed(message="figway: this task run's state reports were lost")
                client.set_task_run_state(task_run.id, state, force=True)
    except Exception:  # Prefect's view only: figway's record is complete already
        log.warning("could not bring the task runs of %s in line", job_run_id, exc_info=True)


def _outcome(runtime: NodeRuntime, job_run_id: str, failed: list[str]) -> State[None] | None:
    """The flow run's final state, agreeing with figway's record of the run."""
    if runtime.store.run_status(job_run_id=job_run_id) in _KILLED:
        return Cancelled(message=f"figway run {job_run_id} was cancelled")
    if failed:
        # A Failed state, not an exception: the flow run ends Failed with this message and
        # no "unexpected exception" traceback in the Prefect UI.
        return Failed(message=f"node(s) failed for good: {', '.join(sorted(failed))}")
    return None
