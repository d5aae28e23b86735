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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from backends.contract import BackendHealth, NodeReport
from backends.model.errors import BackendRejectedError, BackendUnavailableError
from backends.model.status import NodeStatus, RunStatus
from backends.model.workflow import POOLS, RunPlan
from backends.prefect.names import FLOW_NAME, deployment_name, run_tags, work_pool_name

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

__all__ = ["PrefectExecutor"]

log = logging.getLogger(__name__)

_FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


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

    def _pool_has_live_worker(self, client: SyncPrefectClient, pool: str) -> bool:
        workers = client.read_workers_for_work_pool(work_pool_name(pool))
        return any(str(w.status).upper().endswith("ONLINE") for w in workers)

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
        if self.embedded:
            return BackendHealth(
                self.name, up=True, detail="in-process flows on Prefect's ephemeral API"
            )
        from prefect.exceptions import ObjectNotFound

        try:
            with self._client() as client:
                failure = client.api_healthcheck()
                if failure is not None:
                    return BackendHealth(self.name, up=False, detail=f"Prefect API: {failure}")
                workers, missing = 0, []
                for pool in POOLS:
                    try:
                        pool_workers = client.read_workers_for_work_pool(work_pool_name(pool))
                    except ObjectNotFound:
                        missing.append(work_pool_name(pool))
                        continue
                    workers += sum(
                        1 for w in pool_workers if str(w.status).upper().endswith("ONLINE")
                    )
        except Exception as exc:  # health never raises: an unreachable API is "down"
            return BackendHealth(self.name, up=False, detail=f"Prefect unreachable: {exc}")
        # The API answers: up. Missing pools only stop Prefect runs, which say so themselves.
        detail = (
            f"missing work pools {', '.join(missing)}: run `figway setup prefect`"
            if missing
            else ""
        )
        return BackendHealth(self.name, up=True, detail=detail, workers=workers)

    def holdings(self) -> dict[str, int]:
        """Flow runs of figway not yet finished, per work pool (``default.flow_runs``);
        in-process, the flows this gateway is running (``in_process.flow_runs``)."""
        if self.embedded:
            return {"in_process.flow_runs": len(self._threads)}
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        unfinished = [
            StateType.SCHEDULED,
            StateType.PENDING,
            StateType.RUNNING,
            StateType.PAUSED,
            StateType.CANCELLING,
        ]
        figures: dict[str, int] = {}
        with self._client() as client:
            for pool in POOLS:
                figures[f"{pool}.flow_runs"] = client.count_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=["figway"]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
                    ),
                    work_pool_filter=_pool_filter(pool),
                )
        return figures

    # -- reconcile -------------------------------------------------------------------

    def reconcile(self, plan: RunPlan, running: Mapping[str, int]) -> Sequence[NodeReport]:
        """Runs whose flow-run process is gone: the whole run is lost.

        Prefect does not re-run a crashed flow run, and it orchestrates the nodes
        in that one process, so nothing of the run would ever move again. A flow
        run that ended (Crashed, reported by its worker) before its nodes did is
        lost. Silent nodes of a running flow run are lost only when no worker of
        the pool is online (the machine died with its worker); the flow run is
        then marked Crashed so the Prefect UI agrees.
        """
        if self.embedded:
            if plan.job_run_id in self._threads:
                return []  # the in-process flow is alive; a long node is not a lost one
            return [_lost(running, "the in-process Prefect flow run ended before its nodes did")]
        from prefect.states import Crashed

        with self._client() as client:
            flow_runs = self._flow_runs(client, plan)
            state = flow_runs[0].state if flow_runs else None
            if state is None:
                return [_lost(running, "Prefect has no flow run for this run")]
            if running and not state.is_final():
                if self._pool_has_live_worker(client, plan.pool):
                    # A live worker reports its own dead flow-run processes (the flow run
                    # turns Crashed, caught below next round); a silent node alone may just
                    # be holding the GIL.
                    return []
                client.set_flow_run_state(
                    flow_runs[0].id,
                    Crashed(message="figway: the flow-run process stopped reporting"),
                    force=True,
                )
                return [_lost(running, "the Prefect flow-run process was lost mid-node")]
        if state.is_final():
            return [_lost(running, f"the Prefect flow run ended {state.name} before its nodes did")]
        return []  # scheduled or waiting for a worker: not lost, only slow

    # -- client ----------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[SyncPrefectClient]:
        """The executor's Prefect client; transport errors become :class:`BackendUnavailableError`.

        One client is kept open and shared (its httpx pool is thread-safe): building
        one costs about 60 ms, more than the request it would serve. After a
        transport error it is dropped, and the next call connects afresh.
        """
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            yield self._shared_client()
        except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError) as exc:
            # The request never left: nothing was created on the server.
            self._drop_client()
            raise BackendUnavailableError(
                self.name, f"Prefect API: {exc}", may_have_started=False
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            self._drop_client()
            raise BackendUnavailableError(self.name, f"Prefect API: {exc}") from exc
        except PrefectHTTPStatusError as exc:
            raise BackendUnavailableError(self.name, f"Prefect API: {exc}") from exc

    def _shared_client(self) -> SyncPrefectClient:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with self._client_lock:
            if self._open_client is None:
                if self.api_url is None:
                    client = get_client(sync_client=True)
                else:
                    with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                        client = get_client(sync_client=True)
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


def _lost(running: Mapping[str, int], reason: str) -> NodeReport:
    node_id, attempt = next(iter(running.items()), ("", 0))
    return NodeReport(node_id, attempt, NodeStatus.FAILED, reason, run_lost=True)
