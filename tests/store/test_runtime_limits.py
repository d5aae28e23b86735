"""Resource limits per node attempt, in the node runtime: a node over its memory or CPU
time limit fails with the reason in its own process, and the process running the
attempt (this one) records it and goes on."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.model.status import NodeStatus, RunStatus
from backends.nodes import default_registry
from backends.nodes.policy import NodePolicy
from backends.runtime.attempts import NodeRuntime, Outcome
from backends.store import Store, create_database_engine, upgrade
from tests.nodes.secret_nodes import here
from tests.store.test_runtime import wait_until_running
from tests.support.hogs import hog
from tests.support.plans import start_run
from tests.support.policy import TEST_PYTHON_CALLABLES


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'figway.db'}")
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


def runtime_for(store: Store, **policy: Any) -> NodeRuntime:
    registry = default_registry(
        NodePolicy(python_callables=tuple(TEST_PYTHON_CALLABLES.split(",")), **policy)
    )
    return NodeRuntime(store, registry, heartbeat_seconds=0.05)


def test_a_node_over_its_memory_limit_fails_with_the_reason_and_retries(store: Store) -> None:
    runtime = runtime_for(store)
    plan = start_run(
        store, {"big": {**hog("allocate", {"memory_mb": 64}, megabytes=256), "retries": 1}}
    )
    first = runtime.execute(job_run_id=plan.job_run_id, node_id="big", attempt=1)
    assert (first.outcome, first.error) == (Outcome.RETRY, "memory limit 64 MiB exceeded")
    last = runtime.execute(job_run_id=plan.job_run_id, node_id="big", attempt=2)
    assert last.outcome is Outcome.FAILED
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run.nodes["big"].status is NodeStatus.FAILED
    assert run.nodes["big"].error == "memory limit 64 MiB exceeded"
    messages = [record.message for _, record in store.logs(job_run_id=plan.job_run_id)]
    # The node's own line came back from its process, and the reason is logged.
    assert any("allocating 256 MiB" in message for message in messages)
    assert "memory limit 64 MiB exceeded" in messages


def test_a_node_over_its_cpu_time_limit_fails_with_the_reason(store: Store) -> None:
    runtime = runtime_for(store)
    plan = start_run(store, {"hot": hog("burn", {"cpu_seconds": 1}, seconds=30)})
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="hot", attempt=1)
    assert (result.outcome, result.error) == (Outcome.FAILED, "CPU time limit 1 s exceeded")


def test_a_node_within_its_limits_succeeds_and_the_worker_default_applies(store: Store) -> None:
    # The worker's default memory limit applies to a node that sets none.
    runtime = runtime_for(store, default_memory_mb=64)
    plan = start_run(
        store,
        {
            "small": hog("allocate", {"memory_mb": 256, "cpu_seconds": 30}, megabytes=16),
            "defaulted": hog("allocate", None, megabytes=256),
        },
    )
    small = runtime.execute(job_run_id=plan.job_run_id, node_id="small", attempt=1)
    assert small.outcome is Outcome.SUCCEEDED, small.error
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run.nodes["small"].output == {"held_mb": 16}
    defaulted = runtime.execute(job_run_id=plan.job_run_id, node_id="defaulted", attempt=1)
    assert defaulted.error == "memory limit 64 MiB exceeded"


def test_a_failure_in_the_nodes_process_is_recorded_like_any_other(store: Store) -> None:
    runtime = runtime_for(store)
    plan = start_run(store, {"bad": hog("allocate", {"memory_mb": 64}, megabytes="many")})
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="bad", attempt=1)
    assert result.outcome is Outcome.FAILED
    assert (result.error or "").startswith("TypeError: ")
    messages = [record.message for _, record in store.logs(job_run_id=plan.job_run_id)]
    assert any(m.startswith("Traceback") and "TypeError" in m for m in messages)


@pytest.mark.timeout(30)
def test_a_node_in_its_own_process_stops_when_its_run_is_killed(store: Store) -> None:
    runtime = runtime_for(store)
    plan = start_run(
        store, {"nap": {"type": "sleep", "config": {"seconds": 60}, "limits": {"cpu_seconds": 5}}}
    )

    def kill() -> None:
        wait_until_running(store, plan, "nap")
        store.request_cancel(job_run_id=plan.job_run_id)

    killer = threading.Thread(target=kill)
    killer.start()
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="nap", attempt=1)
    killer.join()  # returns long before 60 s, or the timeout fails it
    assert result.outcome is Outcome.CANCELLED
    assert store.run_status(job_run_id=plan.job_run_id) is RunStatus.CANCELLED


class HeldConsole(logging.Handler):
    """A handler that writes through a lock of its own, as Prefect's rich console does;
    another thread holds that lock while the attempt forks."""

    def __init__(self) -> None:
        super().__init__()
        self.console_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.console_lock:
            pass


@pytest.mark.timeout(60)
def test_a_node_logs_in_its_own_process_while_another_thread_holds_a_handlers_lock(
    store: Store,
) -> None:
    # A lock held at the fork stays held in the node's process for ever: a node that
    # logged through that handler there hung, and its run never ended (issue 16).
    runtime = runtime_for(store)
    plan = start_run(store, {"small": hog("allocate", {"memory_mb": 64}, megabytes=1)})
    console = HeldConsole()
    logging.getLogger().addHandler(console)
    console.console_lock.acquire()
    try:
        result = runtime.execute(job_run_id=plan.job_run_id, node_id="small", attempt=1)
    finally:
        console.console_lock.release()
        logging.getLogger().removeHandler(console)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    messages = [record.message for _, record in store.logs(job_run_id=plan.job_run_id)]
    assert any("allocating 1 MiB" in message for message in messages)


class ThisProcessSecrets:
    """A secret source that answers only in the process that made it, as Prefect's client
    (its event loop thread, its connections) works only in the flow-run process."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.pid = os.getpid()

    def get(self, name: str) -> str | None:
        if os.getpid() != self.pid:
            raise RuntimeError("asked in a forked process")
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return f"a test source (key {name})"


def test_a_node_in_its_own_process_gets_its_secrets_here_and_masks_them(store: Store) -> None:
    value = f"leaked-{uuid.uuid4().hex}"
    runtime = runtime_for(store)
    runtime.secrets = ThisProcessSecrets({"leak-test": value})
    spec = {"type": "python", "config": {"callable": here("leak")}, "limits": {"memory_mb": 256}}
    plan = start_run(store, {"node": spec})
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="node", attempt=1)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run.nodes["node"].output["value"] == "***"
    logs = "\n".join(record.message for _, record in store.logs(job_run_id=plan.job_run_id))
    assert "stdout: ***" in logs
    assert "node logger: ***" in logs
    assert value not in logs
