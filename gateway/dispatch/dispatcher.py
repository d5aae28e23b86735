"""Accepting, killing and reconciling runs: the gateway's side of every backend.

The router picks each new run's backend, and the run is recorded with that
choice and its reason before it is submitted, so an accepted run is never
lost: if the backend is unreachable the run goes to the rule's fallback, or
stays ``pending`` with the reason and the client may repeat the same
``job_run_id`` to submit it again. A run is pinned to the backend recorded
with it; cancel and reconcile always ask that backend, whatever the rules say
by then.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from backends.contract import Executor
from backends.model.errors import (
    BackendError,
    BackendUnavailableError,
    FigwayError,
    RunConflictError,
    RunNotFoundError,
    SubmitFailedError,
    WorkflowNotFoundError,
)
from backends.model.status import RUN_TERMINAL, RunStatus
from backends.model.workflow import RunPlan, WorkflowDefinition, parse_definition, shadow_refusal
from backends.nodes import NodeRegistry
from backends.store import RunView, Store
from backends.store.views import Route, WorkflowVersion
from gateway.config import Settings
from gateway.metrics.process import GatewayMetrics
from gateway.routing.router import Decision, Router, RunFacts
from gateway.routing.shadow import shadow_id, with_shadow

__all__ = [
    "Dispatcher",
    "RunRequest",
    "stop_on_backend",
]

log = logging.getLogger(__name__)

#: Parsed definitions kept in memory; the cache starts over when it is full.
_DEFINITION_CACHE_SIZE = 1_024
#: Shadow starts waiting at most; past this a shadow is dropped (only a comparison is lost).
_SHADOW_QUEUE = 100
#: The longest run id the database holds (``runs.job_run_id``).
MAX_RUN_ID_LENGTH = 128
_KILLED = (RunStatus.CANCELLING, RunStatus.CANCELLED)


@dataclass(frozen=True)
class RunRequest:
    workspace_id: str
    folder_id: str
    job_id: str
    workflow_id: str
    job_run_id: str | None = None
    from_job: str | None = None
    parameters: Mapping[str, Any] | None = None


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        executors: Mapping[str, Executor],
        node_types: NodeRegistry,
        settings: Settings,
        router: Router,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.store = store
        self.executors = executors
        self.node_types = node_types
        self.settings = settings
        self.router = router
        self.metrics = metrics
        # Parsed definitions by (workflow_id, version): a version never changes.
        self._definitions: dict[tuple[str, int], WorkflowDefinition] = {}
        # Why a definition version may not run as a shadow (None: it may).
        self._shadow_refusals: dict[tuple[str, int], str | None] = {}
        # Shadow runs start off the request's path: the client waits for its own run only.
        self._shadow_starter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="figway-shadow")
        self._shadow_slots = threading.BoundedSemaphore(_SHADOW_QUEUE)

    # -- starting ----------------------------------------------------------------------

    def start_run(self, request: RunRequest) -> tuple[RunView, bool]:
        """Record and submit a run; returns the run and whether this call created it.

        Repeating a ``job_run_id`` returns the recorded run and starts nothing,
        except that a run whose earlier submission failed is submitted again, to
        the backend it was routed to.
        """
        asked_at = time.perf_counter()
        job_run_id = request.job_run_id or uuid.uuid4().hex
        workflow, definition = self._definition(request.workflow_id)
        plan = RunPlan.from_definition(
            definition,
            job_run_id=job_run_id,
            job_id=request.job_id,
            parameters=request.parameters,
        )
        decision = self.router.decide(
            RunFacts.of_definition(
                definition, job_id=request.job_id, registered_at=workflow.registered_at
            )
        )
        route, shadow = self._route(decision, workflow, definition, job_run_id)
        if not self.store.create_run(
            plan=plan,
            backend=decision.backend,
            from_job=request.from_job,
            route=route,
            workspace_id=request.workspace_id,
            folder_id=request.folder_id,
        ):
            # A known job_run_id (a repeat, or another request winning the race): no new run.
            run = self.store.get_run(job_run_id=job_run_id)
            assert run is not None
            return self._repeat(run, request), False
        _note_foreign_place(request, definition, job_run_id)
        if self.metrics is not None:
            self.metrics.decided(
                backend=decision.backend, rule=decision.rule_id, reason=decision.kind
            )
        run = self._submit(
            plan, decision.backend, fallback=decision.fallback, route=route, shadow=shadow
        )
        if self.metrics is not None:
            self.metrics.submitted(backend=run.backend, seconds=time.perf_counter() - asked_at)
        if shadow is not None and shadow != run.backend:
            self._queue_shadow(plan, shadow, route)
        return run, True

    def _route(
        self,
        decision: Decision,
        workflow: WorkflowVersion,
        definition: WorkflowDefinition,
        job_run_id: str,
    ) -> tuple[Route, str | None]:
        """The route to record, and the shadow backend if the run may be shadowed."""
        refusal = None
        if decision.shadow is not None:
            key = (workflow.workflow_id, workflow.version)
            if key not in self._shadow_refusals:
                self._shadow_refusals[key] = shadow_refusal(definition, self.node_types)
            refusal = self._shadow_refusals[key]
            if refusal is None and len(shadow_id(job_run_id)) > MAX_RUN_ID_LENGTH:
                refusal = (
                    f"the job_run_id is too long to name a shadow run (at most "
                    f"{MAX_RUN_ID_LENGTH - len(shadow_id(''))} characters)"
                )
        reason, shadow = with_shadow(decision.reason, decision.shadow, refusal)
        return Route(decision.rule_id, decision.version, reason), shadow

    def _definition(self, workflow_id: str) -> tuple[WorkflowVersion, WorkflowDefinition]:
        """The workflow's current version and its definition, read and validated once per
        version (a submission reads only the version)."""
        current = self.store.workflow_version(workflow_id=workflow_id)
        if current is None:
            raise _no_workflow(workflow_id)
        key = (workflow_id, current.version)
        definition = self._definitions.get(key)
        if definition is None:
            workflow = self.store.get_workflow(workflow_id=workflow_id)
            if workflow is None:  # deleted since: as if it never was
                raise _no_workflow(workflow_id)
            definition = parse_definition(
                workflow.definition, node_types=self.node_types, max_levels=self.settings.max_levels
            )
            if len(self._definitions) >= _DEFINITION_CACHE_SIZE:
                self._definitions.clear()
                self._shadow_refusals.clear()
            # Under the version it was read at: a newer one is read again next time.
            key = (workflow_id, workflow.version)
            self._definitions[key] = definition
            current = WorkflowVersion(workflow_id, workflow.version, workflow.registered_at)
        return current, definition

    def _repeat(self, run: RunView, request: RunRequest) -> RunView:
        if run.workflow_id != request.workflow_id:
            raise RunConflictError(
                f"job_run_id {run.job_run_id!r} already belongs to a run of workflow "
                f"{run.workflow_id!r}, not {request.workflow_id!r}"
            )
        claim = timedelta(seconds=self.settings.submit_claim_seconds)
        if run.status is RunStatus.PENDING and self.store.claim_submission(
            job_run_id=run.job_run_id, stale_after=claim
        ):
            plan = self.store.load_plan(job_run_id=run.job_run_id)
            assert plan is not None
            # The backend it was routed to, never a fallback: a run is moved only by the
            # request that routed it, so a rules change cannot move an accepted run.
            return self._submit(plan, run.backend)
        return run

    def _submit(
        self,
        plan: RunPlan,
        backend: str,
        *,
        fallback: str | None = None,
        route: Route | None = None,
        shadow: str | None = None,
    ) -> RunView:
        try:
            self.executors[backend].submit(plan)
        except BackendUnavailableError as exc:
            # Only a request that certainly never reached the backend may go elsewhere:
            # one that may have arrived could run on both.
            if fallback is not None and fallback in self.executors and not exc.may_have_started:
                said = route.reason if route else f"routed to {backend}"
                reason = (
                    f"{said}; fell back to {fallback}: {backend} was unreachable ({exc.message})"
                )
                if shadow == fallback:
                    reason += f"; so not shadowed, the run itself is on {fallback}"
                if self.store.reroute(job_run_id=plan.job_run_id, backend=fallback, reason=reason):
                    log.warning("run %s: %s", plan.job_run_id, reason)
                    if self.metrics is not None:
                        self.metrics.fell_back(from_backend=backend, to_backend=fallback)
                    return self._submit(plan, fallback)
            self.store.mark_submit_failed(job_run_id=plan.job_run_id, error=str(exc))
            raise SubmitFailedError(plan.job_run_id, backend, exc.message) from exc
        except BackendError as exc:
            self.store.mark_submit_failed(job_run_id=plan.job_run_id, error=str(exc))
            raise SubmitFailedError(plan.job_run_id, backend, exc.message) from exc
        return self.store.mark_submitted(job_run_id=plan.job_run_id)

    # -- shadows -----------------------------------------------------------------------

    def _queue_shadow(self, plan: RunPlan, backend: str, route: Route) -> None:
        """Start the shadow off the request's path; drop it when too many are waiting."""
        if not self._shadow_slots.acquire(blocking=False):
            log.warning(
                "shadow of run %s dropped: %d shadow starts are waiting already",
                plan.job_run_id,
                _SHADOW_QUEUE,
            )
            return

        def start() -> None:
            try:
                self._start_shadow(plan, backend, route)
            finally:
                self._shadow_slots.release()

        try:
            self._shadow_starter.submit(start)
        except RuntimeError:  # the gateway is stopping: only the comparison is lost
            self._shadow_slots.release()

    def _start_shadow(self, plan: RunPlan, backend: str, route: Route) -> None:
        """Run the plan again on ``backend``, sandboxed, for comparison only."""
        shadow = dataclasses.replace(plan, job_run_id=shadow_id(plan.job_run_id), sandboxed=True)
        try:
            created = self.store.create_run(
                plan=shadow,
                backend=backend,
                from_job=None,
                route=Route(route.rule, route.version, f"shadow of {plan.job_run_id}"),
                shadow_of=plan.job_run_id,
            )
            if not created:
                return
            # A kill of the client's run looks for its shadow after marking the run; the
            # shadow looks at the run after being recorded: one of the two sees the other.
            if self.store.run_status(job_run_id=plan.job_run_id) in _KILLED:
                self._cancel_shadow(plan.job_run_id)
                return
            try:
                self.executors[backend].submit(shadow)
            except BackendError as exc:
                # Only the comparison is lost; the client's run is not touched.
                self.store.abandon_run(
                    job_run_id=shadow.job_run_id, reason=f"shadow not started: {exc}"
                )
                log.warning("shadow of run %s not started on %s: %s", plan.job_run_id, backend, exc)
                return
            self.store.mark_submitted(job_run_id=shadow.job_run_id)
        except FigwayError as exc:
            log.warning("shadow of run %s not started: %s", plan.job_run_id, exc)
        except Exception:  # in a pool thread nobody waits on: it must at least be logged
            log.exception("shadow of run %s not started", plan.job_run_id)

    def close(self) -> None:
        """Stop starting shadows (called when the gateway stops); queued ones are dropped."""
        self._shadow_starter.shutdown(wait=True, cancel_futures=True)

    # -- killing -----------------------------------------------------------------------

    def cancel_run(self, job_run_id: str) -> RunView:
        """Kill a run on the backend that owns it; 409-worthy if it already ended.

        A kill its backend cannot take right now (unreachable) is refused before
        anything changes, so a 503 leaves the run as it was and the client may
        repeat the DELETE. Once the run is marked, the kill is under way: should
        the backend fail between the check and the stop, the run stays
        ``cancelling`` and the reconciler finishes it.
        """
        known = self.store.get_run(job_run_id=job_run_id, with_nodes=False)
        if known is None:
            raise RunNotFoundError(f"no run {job_run_id!r}")
        if known.status not in RUN_TERMINAL and known.submitted_at is not None:
            health = self.executors[known.backend].health()
            if not health.up:
                raise BackendUnavailableError(
                    known.backend, f"cannot reach {known.backend} to stop the run: {health.detail}"
                )
        before = self.store.request_cancel(job_run_id=job_run_id)
        if before in RUN_TERMINAL:
            raise RunConflictError(f"run {job_run_id!r} already finished: it is {before.value}")
        # The shadow first: its backend may answer when the run's own does not.
        self._cancel_shadow(job_run_id)
        # Read after marking it: a submission that finished meanwhile is seen here.
        run = self.store.get_run(job_run_id=job_run_id, with_nodes=False)
        assert run is not None
        try:
            self._stop_on_backend(run)
        except BackendUnavailableError as exc:
            log.warning(
                "run %s is cancelling; its backend went away meanwhile: %s", job_run_id, exc
            )
        return self._view(job_run_id)

    def _cancel_shadow(self, job_run_id: str) -> None:
        shadow = self.store.get_run(job_run_id=shadow_id(job_run_id), with_nodes=False)
        if shadow is None or shadow.status in RUN_TERMINAL:
            return
        if self.store.request_cancel(job_run_id=shadow.job_run_id) not in RUN_TERMINAL:
            shadow = self.store.get_run(job_run_id=shadow.job_run_id, with_nodes=False)
            assert shadow is not None
            try:
                self._stop_on_backend(shadow)
            except BackendUnavailableError as exc:  # the reconciler finishes the kill
                log.warning("cannot stop shadow %s yet: %s", shadow.job_run_id, exc)

    def _stop_on_backend(self, run: RunView) -> None:
        stop_on_backend(self.store, self.executors, run)

    # -- reading -----------------------------------------------------------------------

    def get_run(self, job_run_id: str) -> RunView:
        run = self.store.get_run(job_run_id=job_run_id)
        if run is None:
            raise RunNotFoundError(f"no run {job_run_id!r}")
        return run

    def _view(self, job_run_id: str) -> RunView:
        run = self.store.get_run(job_run_id=job_run_id)
        assert run is not None
        return run


def _note_foreign_place(
    request: RunRequest, definition: WorkflowDefinition, job_run_id: str
) -> None:
    """Log a run whose client named another workspace or folder than its workflow's.

    The run keeps what the client sent (the legacy API did, and clients read it back);
    the workflow's own still decides its route and owns its secrets. Refusing it would
    break clients that always sent these fields loosely.
    """
    sent = (request.workspace_id, request.folder_id)
    own = (definition.workspace_id, definition.folder_id)
    if sent != own:
        log.warning(
            "run %s: the client sent workspace %r, folder %r; workflow %r is in workspace "
            "%r, folder %r (the run keeps the client's; routing and secrets use the "
            "workflow's)",
            job_run_id,
            *sent,
            definition.workflow_id,
            *own,
        )


def stop_on_backend(store: Store, executors: Mapping[str, Executor], run: RunView) -> None:
    """Stop a cancelling run on the backend that owns it, then record it cancelled.

    Raises ``BackendUnavailableError`` when that backend cannot be reached: the
    run then stays ``cancelling`` and the reconciler tries again.
    """
    # A run no backend accepted has nothing to stop there: had a submission raced this
    # kill, its nodes would be refused at start, for the run is cancelling now.
    if run.submitted_at is not None:
        plan = store.load_plan(job_run_id=run.job_run_id)
        assert plan is not None
        executors[run.backend].cancel(plan)
    store.complete_cancel(job_run_id=run.job_run_id)


def _no_workflow(workflow_id: str) -> WorkflowNotFoundError:
    return WorkflowNotFoundError(
        f"no workflow {workflow_id!r}; define it with PUT /workflows/{workflow_id}"
    )
