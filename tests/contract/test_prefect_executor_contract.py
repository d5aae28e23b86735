"""The executor contract run against the Prefect 3 backend: embedded (flows in threads of this
process on Prefect's ephemeral API, SQLite) and production-shaped (a real `prefect server
start` on PostgreSQL, `figway setup prefect` and one `prefect worker start` process).

Prefect keeps its own record of every run: one flow run named after the figway run and
tagged ``figway``. Besides the contract, each test that checks for leftovers holds that
record to the run's outcome: once the figway run has ended, its flow run must end in the
matching final state and nothing of it may still be running.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine

from backends.model.status import RunStatus
from backends.model.workflow import RunPlan
from backends.nodes import default_registry
from backends.prefect.executor import PrefectExecutor
from backends.runtime.attempts import NodeRuntime
from backends.runtime.bootstrap import install_runtime
from backends.store import Store, create_database_engine, upgrade
from backends.store.models import Base
from tests.contract.executor_contract import (
    ExecutorContract,
    ExecutorHarness,
    returns,
    start_run,
    wait_for_end,
)
from tests.support.prefect_services import PrefectServices, flow_runs_of, shared_prefect_services

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

#: The final state of the flow run of a figway run that ended so.
FINAL_FLOW_RUN_STATE = {
    RunStatus.SUCCEEDED: "COMPLETED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "CANCELLED",
}
#: What the test process needs for Prefect's ephemeral API: a home of its own (its SQLite
#: file), no telemetry (the machine is offline), room for a slow first start (migrations),
#: and no server URL, which would turn ephemeral mode off.
EPHEMERAL_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
#: Why a run a test left unfinished was ended at its teardown.
TEST_ENDED = "the test ended before the run did"
#: How long a finished test may wait for its flow runs to settle before the next test.
SETTLE_DEADLINE_SECONDS = 30.0


@dataclass
class PrefectHarness(ExecutorHarness):
    """The contract's harness plus a Prefect client on the server the executor talks to."""

    prefect_client: Callable[[], AbstractContextManager[SyncPrefectClient]] | None = None


class PrefectContract(ExecutorContract):
    """The contract plus Prefect's side: a finished run's one flow run ended as figway's did."""

    def leftovers(self, harness: ExecutorHarness, plan: RunPlan) -> list[str]:
        assert isinstance(harness, PrefectHarness)
        assert harness.prefect_client is not None
        status = harness.store.run_status(job_run_id=plan.job_run_id)
        expected = FINAL_FLOW_RUN_STATE.get(status) if status is not None else None
        with harness.prefect_client() as client:
            flow_runs = flow_runs_of(client, plan.job_run_id)
        found = []
        if len(flow_runs) != 1:
            found.append(f"{len(flow_runs)} Prefect flow runs named {plan.job_run_id}, not 1")
        for flow_run in flow_runs:
            state = flow_run.state_type.value if flow_run.state_type else None
            if flow_run.state is None or not flow_run.state.is_final():
                found.append(f"flow run {flow_run.id} is still {state}")
            elif state != expected:
                found.append(
                    f"flow run {flow_run.id} ended {state}, but the figway run ended "
                    f"{status} (expected {expected})"
                )
        return found


def _truncate(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


# -- embedded: in-process flows on Prefect's ephemeral API -----------------------------------


@pytest.fixture(scope="session")
def prefect_test_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point this process's Prefect at a home of its own, offline, with no server URL.

    Prefect reads its settings when it is imported, and collecting the suite may
    import it first (another test module, a doctest): the global settings are
    rebuilt from the environment here, and again when the session ends.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    wanted = {**EPHEMERAL_ENV, "PREFECT_HOME": str(home)}
    saved = {key: os.environ.get(key) for key in (*wanted, "PREFECT_API_URL")}
    os.environ.update(wanted)
    os.environ.pop("PREFECT_API_URL", None)
    _refresh_prefect_settings()
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_prefect_settings()


def _refresh_prefect_settings() -> None:
    if "prefect" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


@pytest.fixture(scope="session")
def ephemeral_prefect(prefect_test_process: Path) -> Iterator[None]:
    """Prefect's ephemeral API server, started once (its first start migrates a fresh SQLite)."""
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect's clients find this same instance (one per process) instead of starting another.
    server = SubprocessASGIServer()
    server.start()
    try:
        yield
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        # Send what Prefect still buffers while the API is up; at exit it would print
        # "Error logging to API" for every line it can no longer deliver.
        APILogWorker.drain_all()
        EventsWorker.drain_all()
        server.stop()


def _flow_threads() -> list[threading.Thread]:
    """The executor's in-process flow runs (one thread each, named after the run)."""
    return [t for t in threading.enumerate() if t.name.startswith("prefect-flow-")]


@contextlib.contextmanager
def _ephemeral_client() -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


class TestPrefectEmbedded(PrefectContract):
    """Prefect as the embedded default runs it: flows in threads here, SQLite, ephemeral API."""

    @pytest.fixture
    def harness(self, ephemeral_prefect: None, tmp_path: Path) -> Iterator[ExecutorHarness]:
        engine = create_database_engine(f"sqlite:///{tmp_path / 'figway.db'}")
        upgrade(engine)
        store = Store(engine)
        install_runtime(NodeRuntime(store, default_registry(), heartbeat_seconds=0.2))
        try:
            yield PrefectHarness(
                PrefectExecutor(embedded=True),
                store,
                slots=4,
                prefect_client=_ephemeral_client,
            )
        finally:
            # A flow still running here would record into the next test's runtime. Runs the
            # test left unfinished (it failed half-way) are failed, which stops their nodes.
            store.abandon_active_runs(reason=TEST_ENDED)
            deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
            while (left := _flow_threads()) and time.monotonic() < deadline:
                time.sleep(0.1)
            install_runtime(None)
            engine.dispose()
            if left:
                pytest.fail(f"in-process flow runs still running after the test: {left}")

    def leftovers(self, harness: ExecutorHarness, plan: RunPlan) -> list[str]:
        found = super().leftovers(harness, plan)
        if any(t.name == f"prefect-flow-{plan.job_run_id}" for t in _flow_threads()):
            found.append("the in-process flow run's thread is still running")
        return found


# -- production shape: a Prefect server, figway's deployments and a Prefect worker ----------


@pytest.fixture(scope="session")
def prefect_services(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServices]:
    with shared_prefect_services(pg_url, tmp_path_factory.mktemp("prefect-services")) as services:
        yield services


@pytest.mark.service
class TestPrefectOnRealServices(PrefectContract):
    """Prefect in production shape: a flow-run process per run, started by a Prefect worker."""

    @pytest.fixture
    def harness(
        self, pg_url: str, prefect_test_process: Path, prefect_services: PrefectServices
    ) -> Iterator[ExecutorHarness]:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        engine = create_database_engine(pg_url)
        _truncate(engine)
        store = Store(engine)
        try:
            # The executor under test reads PREFECT_API_URL from Prefect's settings, as the
            # gateway does; only this test sees the real server, the embedded suite keeps
            # the ephemeral API.
            with temporary_settings(updates={PREFECT_API_URL: prefect_services.api_url}):
                executor = PrefectExecutor(
                    embedded=False,
                    run_status=lambda job_run_id: store.run_status(job_run_id=job_run_id),
                )
                try:
                    yield PrefectHarness(
                        executor,
                        store,
                        slots=4,
                        worker_logs=prefect_services.logs,
                        prefect_client=prefect_services.client,
                    )
                finally:
                    executor.close()  # it keeps one Prefect client open, as in the gateway
        finally:
            # Hygiene: no flow run of this test may still run (and record) in the next one.
            # Runs the test left unfinished are failed first, which stops their nodes.
            store.abandon_active_runs(reason=TEST_ENDED)
            unfinished = prefect_services.settle(SETTLE_DEADLINE_SECONDS)
            _truncate(engine)
            engine.dispose()
            if unfinished:
                pytest.fail(
                    f"Prefect work still unfinished {SETTLE_DEADLINE_SECONDS:.0f} s after the "
                    f"test: {unfinished}\n{prefect_services.logs()}"
                )

    def test_the_upkeep_ends_a_flow_run_figway_holds_ended_and_health_only_reads(
        self, harness: ExecutorHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from prefect.client.schemas.objects import StateType
        from prefect.states import Running

        from backends.prefect import agreement

        assert isinstance(harness, PrefectHarness)
        assert harness.prefect_client is not None
        prefect_client = harness.prefect_client
        plan = start_run(harness, {"only": returns(kept=True)})
        assert wait_for_end(harness, plan).status is RunStatus.SUCCEEDED

        def flow_run_state() -> StateType | None:
            with prefect_client() as client:
                (flow_run,) = flow_runs_of(client, plan.job_run_id)
                return flow_run.state_type

        deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
        while flow_run_state() is not StateType.COMPLETED:
            assert time.monotonic() < deadline, f"flow run {flow_run_state()}, not COMPLETED"
            time.sleep(0.2)
        # What a flow-run process whose end report an outage lost leaves behind.
        with prefect_client() as client:
            (flow_run,) = flow_runs_of(client, plan.job_run_id)
            client.set_flow_run_state(flow_run.id, Running(), force=True)
        monkeypatch.setattr(agreement, "FINISHED_SWEEP_SECONDS", 0.0)  # every call sweeps

        for _ in range(2):  # twice: the sweep changes a row only when seen so twice
            assert harness.executor.health().up
        assert flow_run_state() is StateType.RUNNING, "health() changed Prefect's record"

        harness.executor.agree_with_record()  # first sight: remembered
        assert flow_run_state() is StateType.RUNNING
        harness.executor.agree_with_record()  # seen again: ended as figway recorded
        assert flow_run_state() is StateType.COMPLETED
