"""The figway flow: runs one figway run's DAG as Prefect tasks.

A node is submitted only when all of its upstream nodes are done (the
notes measured this faster than parking waiting tasks on ``wait_for``), so one
level's nodes run in parallel in the flow's thread pool. Each task calls the
shared node runtime, which records every transition in figway's database;
Prefect's own retries (``retries``/``retry_delay_seconds`` per node) drive the
attempts. A flow that returned normally would end Completed even when a node
failed, so the flow returns a Failed state when any node failed for good.
"""

from __future__ import annotations

import logging
from graphlib import TopologicalSorter

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import task_run
from prefect.states import Cancelled, Failed

from backends.model.errors import FigwayError, NodeAttemptFailedError
from backends.model.status import RunStatus
from backends.prefect.secrets import prefect_secrets
from backends.runtime.attempts import Outcome
from backends.runtime.bootstrap import current_runtime
from backends.store import LogRecord

__all__ = ["figway_run", "run_node"]

_KILLED = (RunStatus.CANCELLING, RunStatus.CANCELLED)


@task(name="figway-node", cache_policy=NO_CACHE, persist_result=False)
def run_node(job_run_id: str, node_id: str) -> str:
    """One attempt of one node; Prefect's run_count is the attempt number."""
    logger = get_run_logger()

    def to_prefect(record: LogRecord) -> None:
        # The node's lines also show in the Prefect UI, under this task run.
        logger.log(logging.getLevelNamesMapping().get(record.level, logging.INFO), record.message)

    result = current_runtime().execute(
        job_run_id=job_run_id,
        node_id=node_id,
        attempt=task_run.run_count,
        mirror=to_prefect,
        secrets=prefect_secrets(),
    )
    if result.outcome in (Outcome.RETRY, Outcome.FAILED):
        raise NodeAttemptFailedError(result.error)
    return result.outcome.value


@flow(name="figway-run", persist_result=False, log_prints=False)
def figway_run(job_run_id: str) -> State[None] | None:
    """Run every node of a figway run, in dependency order."""
    runtime = current_runtime()
    plan = runtime.store.load_plan(job_run_id=job_run_id)
    if plan is None:
        raise FigwayError(f"figway has no run {job_run_id!r}")
    order = TopologicalSorter(plan.upstream)
    order.prepare()
    running: dict[PrefectFuture[str], str] = {}
    failed: list[str] = []
    doomed: set[str] = set()  # downstream of a failure: the store already skipped them

    killed = False
    while order.is_active() and not killed:
        for node_id in order.get_ready():
            if node_id in doomed:
                order.done(node_id)
                continue
            spec = plan.nodes[node_id]
            options = run_node.with_options(
                task_run_name=node_id,
                retries=spec.retries,
                retry_delay_seconds=spec.retry_delay_seconds,
            )
            running[options.submit(job_run_id, node_id)] = node_id
        if not running:
            continue  # only doomed nodes were ready; the sorter hands out their children next
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

    if runtime.store.run_status(job_run_id=job_run_id) in _KILLED:
        return Cancelled(message=f"figway run {job_run_id} was cancelled")
    if failed:
        # A Failed state, not an exception: the flow run ends Failed with this message and
        # no "unexpected exception" traceback in the Prefect UI.
        return Failed(message=f"node(s) failed for good: {', '.join(sorted(failed))}")
    return None
