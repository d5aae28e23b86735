"""The dispatcher's routing edges, with backends that fail on cue: fallbacks only when a
submission certainly never arrived, repeats that stay put, shadows that follow a kill.

The store is real (SQLite and PostgreSQL); the executors are stand-ins that record
what they were asked, so each edge can be forced exactly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from backends.contract import BackendHealth, NodeReport
from backends.model.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    SubmitFailedError,
)
from backends.model.status import RunStatus
from backends.model.workflow import RunPlan, parse_definition
from backends.nodes import default_registry
from backends.store import Store
from backends.store.models import Workflow
from backends.store.views import Route
from gateway.config import Settings
from gateway.dispatch.dispatcher import Dispatcher, RunRequest
from gateway.dispatch.reconcile import Reconciler
from gateway.routing.loading import parse_rules
from gateway.routing.router import Router
from tests.support.plans import one_node_workflow


@dataclass
class StandIn:
    """An executor that records submits and cancels, and fails when told to."""

    name: str
    failure: BackendUnavailableError | None = None
    submitted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def submit(self, plan: RunPlan) -> None:
        if self.failure is not None:
            raise self.failure
        self.submitted.append(plan.job_run_id)

    def cancel(self, plan: RunPlan) -> None:
        self.cancelled.append(plan.job_run_id)

    def health(self) -> BackendHealth:
        return BackendHealth(self.name, up=True)

    def reconcile(self, plan: RunPlan, running: Mapping[str, int]) -> Sequence[NodeReport]:
        return []


RULES = """\
phase: 2
default: rq
rules:
  - id: pilot
    match: {workflow_id: pilot}
    backend: prefect
    fallback: rq
  - id: shadowed
    match: {workflow_id: shadowed}
    backend: rq
    shadow: prefect
  - id: both
    match: {workflow_id: both}
    backend: prefect
    shadow: rq
    fallback: rq
"""


@pytest.fixture
def backends() -> dict[str, StandIn]:
    return {"rq": StandIn("rq"), "prefect": StandIn("prefect")}


@pytest.fixture
def dispatcher(store: Store, backends: dict[str, StandIn]) -> Iterator[Dispatcher]:
    for workflow_id in ("pilot", "shadowed", "both"):
        store.put_workflow(definition=one_node_workflow(workflow_id))
    running = Dispatcher(
        store=store,
        executors=backends,  # type: ignore[arg-type]
        node_types=default_registry(),
        settings=Settings(_env_file=None),  # type: ignore[call-arg]
        router=Router(parse_rules(RULES, source="test")),
    )
    yield running
    running.close()


def request(workflow_id: str, job_run_id: str) -> RunRequest:
    return RunRequest("ws", "f", "job", workflow_id, job_run_id=job_run_id)


def refused(*, may_have_started: bool) -> BackendUnavailableError:
    return BackendUnavailableError("prefect", "down", may_have_started=may_have_started)


def test_a_submission_that_never_arrived_goes_to_the_fallback(
    dispatcher: Dispatcher, backends: dict[str, StandIn]
) -> None:
    backends["prefect"].failure = refused(may_have_started=False)
    run, created = dispatcher.start_run(request("pilot", "r1"))
    assert created
    assert (run.backend, run.status) == ("rq", RunStatus.QUEUED)
    assert backends["rq"].submitted == ["r1"]
    assert run.route is not None
    assert "fell back to rq: prefect was unreachable" in run.route.reason


def test_a_submission_that_may_have_arrived_is_not_sent_elsewhere(
    dispatcher: Dispatcher, backends: dict[str, StandIn]
) -> None:
    """A timeout after the request left could mean the run exists there: two backends
    must never both run it, so the client gets 503 and retries the same backend."""
    backends["prefect"].failure = refused(may_have_started=True)
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("pilot", "r2"))
    assert backends["rq"].submitted == []
    run = dispatcher.get_run("r2")
    assert (run.backend, run.status) == ("prefect", RunStatus.PENDING)


def test_a_repeated_request_retries_the_backend_it_was_routed_to(
    dispatcher: Dispatcher, backends: dict[str, StandIn], store: Store
) -> None:
    backends["prefect"].failure = refused(may_have_started=True)
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("pilot", "r3"))
    backends["prefect"].failure = refused(may_have_started=False)  # now certainly down
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("pilot", "r3"))
    assert backends["rq"].submitted == [], "a repeat never falls back"
    backends["prefect"].failure = None
    run, created = dispatcher.start_run(request("pilot", "r3"))
    assert not created
    assert (run.backend, run.status) == ("prefect", RunStatus.QUEUED)


def test_no_shadow_on_the_backend_the_run_fell_back_to(
    dispatcher: Dispatcher, backends: dict[str, StandIn]
) -> None:
    backends["prefect"].failure = refused(may_have_started=False)
    run, _ = dispatcher.start_run(request("both", "r4"))
    dispatcher.close()  # waits for any shadow start
    assert backends["rq"].submitted == ["r4"]
    assert dispatcher.store.get_run(job_run_id="r4~shadow") is None
    assert run.route is not None
    assert run.route.reason.endswith("so not shadowed, the run itself is on rq")


def test_killing_a_shadowed_run_kills_its_shadow_on_its_backend(
    dispatcher: Dispatcher, backends: dict[str, StandIn], store: Store
) -> None:
    dispatcher.start_run(request("shadowed", "r5"))
    dispatcher.close()  # waits for the shadow to start
    assert backends["prefect"].submitted == ["r5~shadow"]
    dispatcher.cancel_run("r5")
    assert backends["prefect"].cancelled == ["r5~shadow"]
    assert store.run_status(job_run_id="r5~shadow") is RunStatus.CANCELLED


def test_a_run_killed_before_its_shadow_starts_gets_no_shadow_run(
    dispatcher: Dispatcher,
    backends: dict[str, StandIn],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kill lands between the run's submission and its shadow's start."""
    queued: list[tuple[RunPlan, str, Route]] = []
    monkeypatch.setattr(dispatcher, "_queue_shadow", lambda *args: queued.append(args))
    dispatcher.start_run(request("shadowed", "r6"))
    dispatcher.cancel_run("r6")
    ((plan, backend, route),) = queued
    dispatcher._start_shadow(plan, backend, route)
    assert backends["prefect"].submitted == []
    assert store.run_status(job_run_id="r6~shadow") is RunStatus.CANCELLED


def test_a_job_run_id_too_long_for_a_shadow_id_is_not_shadowed(
    dispatcher: Dispatcher, backends: dict[str, StandIn]
) -> None:
    long_id = "x" * 125
    run, _ = dispatcher.start_run(request("shadowed", long_id))
    assert run.route is not None
    assert "not shadowed on prefect: the job_run_id is too long" in run.route.reason
    dispatcher.close()
    assert backends["prefect"].submitted == []


def test_a_pending_run_nobody_submits_is_submitted_by_the_reconciler(
    dispatcher: Dispatcher, backends: dict[str, StandIn], store: Store
) -> None:
    backends["rq"].failure = BackendUnavailableError("rq", "down", may_have_started=False)
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("shadowed", "r8"))
    assert store.run_status(job_run_id="r8") is RunStatus.PENDING
    backends["rq"].failure = None
    settings = Settings(_env_file=None, node_silence_seconds=0.001)  # type: ignore[call-arg]
    Reconciler(store=store, executors=dispatcher.executors, settings=settings).reconcile_once()
    run = store.get_run(job_run_id="r8", with_nodes=False)
    assert run is not None
    assert (run.status, run.error) == (RunStatus.QUEUED, None)
    assert backends["rq"].submitted == ["r8"]


def test_a_pending_run_its_backend_refuses_fails_with_the_backends_reason(
    dispatcher: Dispatcher, backends: dict[str, StandIn], store: Store
) -> None:
    backends["rq"].failure = BackendUnavailableError("rq", "down", may_have_started=False)
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("shadowed", "r9"))
    backends["rq"].failure = BackendRejectedError("rq", "no such queue")
    settings = Settings(_env_file=None, node_silence_seconds=0.001)  # type: ignore[call-arg]
    Reconciler(store=store, executors=dispatcher.executors, settings=settings).reconcile_once()
    run = store.get_run(job_run_id="r9", with_nodes=False)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error == "rq refused the run when it was submitted again: no such queue"


def test_a_shadow_left_unsubmitted_by_a_stopped_gateway_is_ended(
    dispatcher: Dispatcher, store: Store
) -> None:
    workflow = store.get_workflow(workflow_id="shadowed")
    assert isinstance(workflow, Workflow)
    definition = parse_definition(workflow.definition, node_types=default_registry())
    primary = RunPlan.from_definition(definition, job_run_id="r7", job_id="job")
    shadow = RunPlan.from_definition(definition, job_run_id="r7~shadow", job_id="job")
    assert store.create_run(plan=primary, backend="rq", from_job=None)
    assert store.create_run(plan=shadow, backend="prefect", from_job=None, shadow_of="r7")
    settings = Settings(_env_file=None, submit_claim_seconds=0.001)  # type: ignore[call-arg]
    Reconciler(store=store, executors=dispatcher.executors, settings=settings).reconcile_once()
    assert store.run_status(job_run_id="r7~shadow") is RunStatus.FAILED
    # The client's run is not ended with its shadow: nobody held it, so it is submitted.
    assert store.run_status(job_run_id="r7") is RunStatus.QUEUED


# -- honest answers -------------------------------------------------------------------------


def test_a_repeat_while_another_request_submits_the_run_reads_pending(
    dispatcher: Dispatcher, backends: dict[str, StandIn], store: Store
) -> None:
    """The route answers such a repeat 202, not a 200 that looks final."""
    gate, entered = threading.Event(), threading.Event()
    real_submit = backends["prefect"].submit

    def slow_submit(plan: RunPlan) -> None:
        entered.set()
        gate.wait(timeout=30)
        real_submit(plan)

    backends["prefect"].submit = slow_submit  # type: ignore[method-assign]
    first = threading.Thread(target=dispatcher.start_run, args=(request("pilot", "r-slow"),))
    first.start()
    try:
        assert entered.wait(timeout=30)
        run, created = dispatcher.start_run(request("pilot", "r-slow"))
        assert (created, run.status) == (False, RunStatus.PENDING)
    finally:
        gate.set()
        first.join(timeout=30)
    assert backends["prefect"].submitted == ["r-slow"], "the repeat submitted nothing"
    assert dispatcher.get_run("r-slow").status is RunStatus.QUEUED


def test_a_run_submitted_on_a_repeat_keeps_no_stale_error(
    dispatcher: Dispatcher, backends: dict[str, StandIn]
) -> None:
    backends["prefect"].failure = refused(may_have_started=True)
    with pytest.raises(SubmitFailedError):
        dispatcher.start_run(request("pilot", "r-stale"))
    assert dispatcher.get_run("r-stale").error, "the pending run says why it waits"
    backends["prefect"].failure = None

    run, created = dispatcher.start_run(request("pilot", "r-stale"))

    assert (created, run.status, run.error) == (False, RunStatus.QUEUED, None)
    assert dispatcher.get_run("r-stale").error is None


def test_the_clients_workspace_and_folder_are_kept_as_sent(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    # The workflow is in workspace "ws", folder "f" (one_node_workflow).
    sent = RunRequest("ws-client", "folder-client", "job", "pilot", job_run_id="r-place")
    with caplog.at_level(logging.WARNING, logger="gateway.dispatch.dispatcher"):
        run, created = dispatcher.start_run(sent)

    assert created
    assert (run.workspace_id, run.folder_id) == ("ws-client", "folder-client")
    stored = dispatcher.get_run("r-place")
    assert (stored.workspace_id, stored.folder_id) == ("ws-client", "folder-client")
    plan = dispatcher.store.load_plan(job_run_id="r-place")
    assert plan is not None
    assert (plan.workspace_id, plan.folder_id) == ("ws", "f"), "the workflow's own owns secrets"
    assert any("workspace 'ws-client'" in r.getMessage() for r in caplog.records), caplog.text


def test_a_client_naming_the_workflows_own_place_logs_nothing(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.dispatch.dispatcher"):
        run, _ = dispatcher.start_run(request("pilot", "r-same"))
    assert (run.workspace_id, run.folder_id) == ("ws", "f")
    assert not [r for r in caplog.records if "the client sent" in r.getMessage()]
