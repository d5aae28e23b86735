"""The target backend: one Prefect flow run per figway run.

With a Prefect server (``PREFECT_API_URL`` set), a run becomes a flow run of
the pool's deployment, created with ``idempotency_key = job_run_id`` so a
repeated submission never makes a second flow run, named after the run and
tagged with its workflow, workspace and folder; Prefect workers on the pool
pick it up. Without one (the embedded default), the flow runs in a thread of
the gateway against Prefect's ephemeral API.

Kills: a deployment's flow run is moved to Cancelling and Prefect's worker
stops its process; an in-process flow run stops cooperatively, through the
node runtime's heartbeat, because Prefect cannot stop a flow called directly.

Faults: every API call fails fast (:data:`REQUEST_TIMEOUT`, no client retries),
so a POST, ``/readyz`` and the backend check answer within seconds while Prefect
is down. A run whose flow-run process died is resumed in a new flow run that
starts where figway's record stands (``reconcile``; ``flow.py``), and Prefect's
record is made to agree with figway's: dead flow runs and their task runs are
marked Crashed, flow runs left Running after their run ended are ended
(``health``). ``docs/reliability-prefect.md`` walks through each fault.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backends.contract import BackendHealth, NodeReport
from backends.model.errors import BackendRejectedError, BackendUnavailableError
from backends.model.status import NodeStatus, RunStatus
from backends.model.workflow import POOLS, RunPlan
from backends.prefect.names import FLOW_NAME, deployment_name, run_tags, work_pool_name
from backends.prefect.resumes import lost_attempt_error

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import Settings

    from backends.prefect.agreement import RecordSweep

__all__ = ["PrefectExecutor"]

log = logging.getLogger(__name__)

_FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED)
#: A silent flow run that Prefect says is running is taken for dead when it is still
#: silent this long after it was first seen silent.
DEATH_CONFIRM_SECONDS = 5.0
#: A sighting older than this is forgotten: the next one counts as the first again.
_SIGHTINGS_FORGOTTEN = 120.0
#: A flow run pending this long lost the worker that took it: its process never started
#: (starting one takes seconds).
PENDING_GRACE_SECONDS = 120.0
#: Silent runs remembered; the memory starts over past this.
_SILENT_MEMORY = 10_000
#: New flow runs a run may be resumed in after its flow-run process was lost.
MAX_RESUMES = 5
#: Seconds one Prefect API request may take (connecting, then each read or write). A
#: POST waits for one such request, so it answers within seconds while Prefect is down.
REQUEST_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


class PrefectExecutor:
    """figway's Prefect backend. ``embedded`` runs flows in-process (no server)."""

    name = "prefect"
    #: Prefect's ephemeral API server is one per process, whichever executor starts it: two
    #: gateways in one process (tests), or a background start still going when its gateway
    #: stopped, must not start it at once.
    _EPHEMERAL_LOCK = threading.Lock()

    def __init__(
        self,
        *,
        embedded: bool,
        run_status: Callable[[str], RunStatus | None] | None = None,
        api_url: str | None = None,
    ) -> None:
        self.embedded = embedded
        # The server to talk to; None: whatever Prefect's own settings say. Given
        # explicitly, it wins over settings Prefect read when it was first imported.
        self.api_url = api_url
        # figway's own record of a run. A flow run lingers a moment after its last node;
        # a cancel arriving then must not turn a finished run's flow run Cancelled.
        self.run_status = run_status
        self._deployment_ids: dict[str, Any] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._client_lock = threading.Lock()
        self._ephemeral_ready = False
        self._open_client: SyncPrefectClient | None = None
        self._settings: Settings | None = None
        # Runs whose flow run Prefect says is running but which were silent: the flow
        # run and when it was first seen so (see _confirmed_silent).
        self._silent_since: dict[str, tuple[Any, float]] = {}
        # Ends in Prefect what figway holds ended (agree_with_record, from the gateway's upkeep).
        self._sweep: RecordSweep | None = None
        if run_status is not None and not embedded:
            from backends.prefect.agreement import RecordSweep

            self._sweep = RecordSweep(run_status)

    # -- submit ----------------------------------------------------------------------

    def submit(self, plan: RunPlan) -> None:
        if self.embedded:
            self._start_in_process(plan)
            return
        with self._client() as client:
            deployment_id = self._deployment_id(client, plan.pool)
            client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"job_run_id": plan.job_run_id},
                idempotency_key=plan.job_run_id,
                name=plan.job_run_id,
                tags=run_tags(plan),
            )

    def _start_in_process(self, plan: RunPlan) -> None:
        from prefect import tags

        from backends.prefect.flow import figway_run

        def run() -> None:
            try:
                self._ensure_ephemeral_api()
                with tags(*run_tags(plan)):
                    figway_run.with_options(flow_run_name=plan.job_run_id)(plan.job_run_id)
            except Exception:  # the flow's outcome is in figway's database already
                log.debug(
                    "in-process flow run %s ended with an error", plan.job_run_id, exc_info=True
                )
            finally:
                self._threads.pop(plan.job_run_id, None)

        thread = threading.Thread(target=run, name=f"prefect-flow-{plan.job_run_id}", daemon=True)
        self._threads[plan.job_run_id] = thread
        thread.start()

    def start_ephemeral_api(self) -> None:
        """Start Prefect's ephemeral API now (the embedded default), rather than when the
        first flow needs it; raises BackendUnavailableError if it does not come up."""
        self._ensure_ephemeral_api()

    def _ensure_ephemeral_api(self) -> None:
        """Start Prefect's ephemeral API once, before any flow of this process runs.

        Flows started together would each start it, and the servers race on
        migrating the same SQLite file ("duplicate column", failed start-up).
        """
        with PrefectExecutor._EPHEMERAL_LOCK:
            if self._ephemeral_ready:
                return
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                failure = client.api_healthcheck()
            if failure is not None:
                raise BackendUnavailableError(self.name, f"Prefect's ephemeral API: {failure}")
            self._ephemeral_ready = True

    def _deployment_id(self, client: SyncPrefectClient, pool: str) -> Any:
        from prefect.exceptions import ObjectNotFound

        if pool not in self._deployment_ids:
            try:
                deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{deployment_name(pool)}")
            except ObjectNotFound as exc:
                raise BackendRejectedError(
                    self.name,
                    f"Prefect has no deployment {FLOW_NAME}/{deployment_name(pool)}; "
                    "run `figway setup prefect` once",
                ) from exc
            self._deployment_ids[pool] = deployment.id
        return self._deployment_ids[pool]

    # -- cancel ----------------------------------------------------------------------

    def cancel(self, plan: RunPlan) -> None:
        if self.embedded:
            return  # the in-process flow sees the kill through the node runtime
        if self.run_status is not None and self.run_status(plan.job_run_id) in _FINISHED:
            return  # finished in figway: its flow run is only ending, leave it be
        from prefect.states import Cancelled, Cancelling

        with self._client() as client:
            for flow_run in self._flow_runs(client, plan):
                state = flow_run.state
                if state is None or state.is_final():
                    continue
                if state.is_scheduled() or state.is_pending():
                    # Not started: nothing to stop, so it ends at once.
                    client.set_flow_run_state(flow_run.id, Cancelled(), force=True)
                else:
                    client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

    def _flow_runs(self, client: SyncPrefectClient, plan: RunPlan) -> list[FlowRun]:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterName,
            FlowRunFilterTags,
        )

        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[plan.job_run_id]),
                    tags=FlowRunFilterTags(all_=["figway"]),
                )
            )
        )

    # -- health ----------------------------------------------------------------------

    def health(self) -> BackendHealth:
        """Whether the API answers, and which work pools hold work with no online worker."""
        if self.embedded:
            return BackendHealth(
                self.name, up=True, detail="in-process flows on Prefect's ephemeral API"
            )
        from prefect.exceptions import ObjectNotFound

        try:
            with self._client() as client:
                failure = client.api_healthcheck()
                if failure is not None:
                    return BackendHealth(
                        self.name, up=False, detail=f"Prefect API: {_describe(failure)}"
                    )
                workers, missing, unserved = 0, [], []
                for pool in POOLS:
                    try:
                        online = self._online_workers(client, pool)
                    except ObjectNotFound:
                        missing.append(work_pool_name(pool))
                        continue
                    workers += online
                    if online == 0 and self._unfinished_flow_runs(client, pool) > 0:
                        unserved.append(work_pool_name(pool))
        except Exception as exc:  # health never raises: an unreachable API is "down"
            return BackendHealth(self.name, up=False, detail=f"Prefect unreachable: {exc}")
        # The API answers: up. Missing pools only stop Prefect runs, which say so themselves.
        detail = (
            f"missing work pools {', '.join(missing)}: run `figway setup prefect`"
            if missing
            else ""
        )
        if unserved:
            detail = f"{detail}; " if detail else ""
            detail += f"flow runs wait in {', '.join(unserved)} with no online worker"
        return BackendHealth(
            self.name, up=True, detail=detail, workers=workers, unserved=tuple(unserved)
        )

    def _online_workers(self, client: SyncPrefectClient, pool: str) -> int:
        workers = client.read_workers_for_work_pool(work_pool_name(pool))
        return sum(1 for w in workers if str(w.status).upper().endswith("ONLINE"))

    def _unfinished_flow_runs(self, client: SyncPrefectClient, pool: str) -> int:
        """figway's flow runs of the pool that are not finished (waiting or running)."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        # Waiting, starting or running: what a worker still has to serve.
        unfinished = [
            StateType.SCHEDULED,
            StateType.PENDING,
            StateType.RUNNING,
            StateType.PAUSED,
            StateType.CANCELLING,
        ]
        return client.count_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["figway"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
            ),
            work_pool_filter=_pool_filter(pool),
        )

    def holdings(self) -> dict[str, int]:
        """Flow runs of figway not yet finished, per work pool (``default.flow_runs``);
        in-process, the flows this gateway is running (``in_process.flow_runs``)."""
        if self.embedded:
            return {"in_process.flow_runs": len(self._threads)}
        with self._client() as client:
            return {f"{pool}.flow_runs": self._unfinished_flow_runs(client, pool) for pool in POOLS}

    # -- reconcile -------------------------------------------------------------------

    def agree_with_record(self) -> None:
        """End in Prefect the flow runs and task runs figway holds ended
        (:class:`~backends.prefect.agreement.RecordSweep`, at most every
        :data:`~backends.prefect.agreement.FINISHED_SWEEP_SECONDS`).

        In-process flows report straight to the ephemeral API: nothing drifts there.
        """
        if self._sweep is None or not self._sweep.due():
            return
        with self._client() as client:
            self._sweep.maybe_sweep(client)

    def reconcile(self, plan: RunPlan, running: Mapping[str, int]) -> Sequence[NodeReport]:
        """Resume a run whose flow-run process is gone, in a new flow run; lose it only
        when it was resumed :data:`MAX_RESUMES` times already or was cancelled in Prefect.

        Prefect never re-runs a crashed flow run, and the flow-run process is what
        orchestrates the nodes, so without a new flow run nothing of the run would move
        again. The process is gone when its flow run ended Crashed or Failed (its
        worker saw it die; the flow raised), or when Prefect still says it is running
        but it has been silent twice, at least :data:`DEATH_CONFIRM_SECONDS` apart
        (its worker died with it, or the server was down when it died: nobody reported
        it). The new flow run reads figway's record and skips the nodes already done
        (``flow.py``). Nodes that were running are reported retrying, or failed when
        that attempt was their last; the dead flow run's unfinished task runs are
        marked Crashed, so Prefect's record is never left running.
        """
        if self.embedded:
            if plan.job_run_id in self._threads:
                return []  # the in-process flow is alive; a long node is not a lost one
            return [_lost(running, "the in-process Prefect flow run ended before its nodes did")]
        from prefect.states import Crashed

        if len(self._silent_since) > _SILENT_MEMORY:
            self._silent_since.clear()
        with self._client() as client:
            flow_runs = sorted(self._flow_runs(client, plan), key=_created_at)
            latest = flow_runs[-1] if flow_runs else None
            state = latest.state if latest is not None else None
            if latest is None or state is None:
                return self._resume(client, plan, flow_runs, running, "Prefect has no flow run")
            if state.is_scheduled() or state.is_paused() or state.is_cancelling():
                self._silent_since.pop(plan.job_run_id, None)
                return []  # waiting for a worker, or being stopped: slow, not lost
            if state.is_pending() and not _pending_too_long(state.timestamp):
                return []  # a worker took it and is starting its process (seconds)
            if not state.is_final():  # running (or stuck pending) in Prefect's record
                if not state.is_pending() and not self._confirmed_silent(
                    plan.job_run_id, latest.id
                ):
                    return []
                client.set_flow_run_state(
                    latest.id,
                    Crashed(message="figway: the flow-run process stopped reporting"),
                    force=True,
                )
                return self._resume(
                    client, plan, flow_runs, running, "the flow-run process stopped reporting"
                )
            if state.is_crashed() or state.is_failed() or state.is_completed():
                why = f"the Prefect flow run ended {state.name}"
                return self._resume(client, plan, flow_runs, running, why)
        return [_lost(running, f"the Prefect flow run ended {state.name} before its nodes did")]

    def _confirmed_silent(self, job_run_id: str, flow_run_id: Any) -> bool:
        """True on the second sighting of the same silent flow run, far enough apart.

        One sighting is not enough: just after an outage of figway's database, a live
        process may not have beaten yet.
        """
        now = time.monotonic()
        seen = self._silent_since.get(job_run_id)
        if seen is None or seen[0] != flow_run_id or now - seen[1] > _SIGHTINGS_FORGOTTEN:
            self._silent_since[job_run_id] = (flow_run_id, now)
            return False
        return now - seen[1] >= DEATH_CONFIRM_SECONDS

    def _resume(
        self,
        client: SyncPrefectClient,
        plan: RunPlan,
        flow_runs: Sequence[FlowRun],
        running: Mapping[str, int],
        why: str,
    ) -> list[NodeReport]:
        """Start the run again in a new flow run, or lose it when its resumes are spent."""
        from backends.prefect.agreement import crash_task_runs

        self._silent_since.pop(plan.job_run_id, None)
        for flow_run in flow_runs:
            crash_task_runs(client, flow_run.id, "figway: its flow-run process was lost")
        reports = []
        for node_id, attempt in running.items():
            retried = attempt < plan.nodes[node_id].retries + 1
            status = NodeStatus.RETRYING if retried else NodeStatus.FAILED
            reports.append(
                NodeReport(node_id, attempt, status, lost_attempt_error(attempt, retried=retried))
            )
        if reports and all(r.status is NodeStatus.FAILED for r in reports):
            # Those nodes end here; whether work is left (an independent branch) is known
            # once they are recorded: the next round resumes the run if it is still active.
            return reports
        resumes = max(len(flow_runs) - 1, 0)
        if resumes >= MAX_RESUMES:
            return [_lost(running, f"{why}; resumed {resumes} times already, so it is lost")]
        deployment_id = self._deployment_id(client, plan.pool)
        # One key per resume: gateways reconciling the same run at once make one flow run.
        client.create_flow_run_from_deployment(
            deployment_id,
            parameters={"job_run_id": plan.job_run_id},
            idempotency_key=f"{plan.job_run_id}~resume-{len(flow_runs)}",
            name=plan.job_run_id,
            tags=[*run_tags(plan), "figway-resumed"],
        )
        log.warning(
            "run %s: %s; resumed in a new Prefect flow run (resume %d of at most %d)",
            plan.job_run_id,
            why,
            resumes + 1,
            MAX_RESUMES,
        )
        return reports

    # -- client ----------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[SyncPrefectClient]:
        """The executor's Prefect client; transport errors become :class:`BackendUnavailableError`.

        One client is kept open and shared (its httpx pool is thread-safe): building
        one costs about 60 ms, more than the request it would serve. After a
        transport error it is dropped, and the next call connects afresh.

        Every call fails fast: each request has :data:`REQUEST_TIMEOUT` and Prefect's
        client does not retry it (its default backs off for up to a minute, which kept
        a POST, ``/readyz`` and the health check hanging through a server outage). The
        gateway has its own way to try again: the client's retry, the reconciler.
        """
        import httpx
        from prefect.context import SettingsContext
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            with SettingsContext(profile=self._profile(), settings=self._call_settings()):
                yield self._shared_client()
        except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError) as exc:
            # The request never left: nothing was created on the server.
            self._drop_client()
            raise BackendUnavailableError(
                self.name, f"Prefect API: {_describe(exc)}", may_have_started=False
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            self._drop_client()
            raise BackendUnavailableError(self.name, f"Prefect API: {_describe(exc)}") from exc
        except PrefectHTTPStatusError as exc:
            raise BackendUnavailableError(self.name, f"Prefect API: {exc}") from exc

    def _call_settings(self) -> Settings:
        """Prefect's settings for the executor's calls: this server, no client retries."""
        from prefect.context import get_settings_context
        from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES

        with self._client_lock:
            if self._settings is None:
                updates: dict[Any, Any] = {PREFECT_CLIENT_MAX_RETRIES: 0}
                if self.api_url is not None:
                    updates[PREFECT_API_URL] = self.api_url
                self._settings = get_settings_context().settings.copy_with_update(updates=updates)
            return self._settings

    @staticmethod
    def _profile() -> Any:
        from prefect.context import get_settings_context

        return get_settings_context().profile

    def _shared_client(self) -> SyncPrefectClient:
        import httpx
        from prefect.client.orchestration import get_client

        with self._client_lock:
            if self._open_client is None:
                timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
                client = get_client(sync_client=True, httpx_settings={"timeout": timeout})
                client.__enter__()
                self._open_client = client
            return self._open_client

    def _drop_client(self) -> None:
        with self._client_lock:
            client, self._open_client = self._open_client, None
        if client is not None:
            client.__exit__(None, None, None)

    def close(self) -> None:
        """Close the shared Prefect client (the gateway calls this on shutdown)."""
        self._drop_client()


def _pool_filter(pool: str) -> Any:
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool_name(pool)]))


def _created_at(flow_run: FlowRun) -> datetime:
    """When the flow run was created: the resumes of a run sort in the order they came."""
    return flow_run.created or datetime.min.replace(tzinfo=UTC)


def _pending_too_long(since: datetime | None) -> bool:
    if since is None:
        return False
    return (datetime.now(UTC) - since).total_seconds() > PENDING_GRACE_SECONDS


def _lost(running: Mapping[str, int], reason: str) -> NodeReport:
    node_id, attempt = next(iter(running.items()), ("", 0))
    return NodeReport(node_id, attempt, NodeStatus.FAILED, reason, run_lost=True)


def _describe(exc: BaseException) -> str:
    """An httpx error as a message: its text, or its kind when it has none (timeouts)."""
    return str(exc) or type(exc).__name__
