"""The node runtime on SQLite with the builtin node types: outcomes, outputs, logs and kills."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.artifacts import ArtifactStore
from backends.model.status import NodeStatus, RunStatus
from backends.model.workflow import RunPlan
from backends.nodes import NodeContext, default_registry
from backends.runtime.attempts import AttemptResult, NodeRuntime, Outcome
from backends.runtime.bounds import MAX_TEXT_CHARS
from backends.store import LogRecord, Store, create_database_engine, upgrade
from tests.support.plans import start_run


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'figway.db'}")
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def runtime(sqlite_store: Store) -> NodeRuntime:
    return NodeRuntime(sqlite_store, default_registry(), heartbeat_seconds=0.05)


def chatty(context: NodeContext, greeting: str) -> dict[str, Any]:
    """A python node that talks on stdout, stderr and its logger."""
    print(f"{greeting} from stdout")
    print("no newline at the end", end="")
    sys.stderr.write("a warning on stderr\n")
    context.logger.info("from the node logger, attempt %d", context.attempt)
    return {"greeting": greeting, "upstream": dict(context.upstream_outputs)}


def explode() -> None:
    raise ValueError("the input was malformed")


def leave() -> None:
    """Node code that ends the way scripts often do."""
    print("giving up")
    sys.exit(3)


def measure() -> dict[str, float]:
    """What a pandas-style aggregate over no rows returns."""
    return {"ratio": float("nan"), "ceiling": float("inf")}


def here(function_name: str) -> str:
    """The ``module:function`` reference of a function in this file."""
    return f"{__name__}:{function_name}"


def execute(runtime: NodeRuntime, plan: RunPlan, node_id: str, attempt: int = 1) -> AttemptResult:
    return runtime.execute(job_run_id=plan.job_run_id, node_id=node_id, attempt=attempt)


def node(store: Store, plan: RunPlan, node_id: str) -> Any:
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    return run.nodes[node_id]


def logs(store: Store, plan: RunPlan) -> list[LogRecord]:
    return [record for _, record in store.logs(job_run_id=plan.job_run_id)]


def test_a_successful_node_stores_its_output(sqlite_store: Store, runtime: NodeRuntime) -> None:
    plan = start_run(
        sqlite_store,
        {
            "mean": {
                "type": "python",
                "config": {"callable": "statistics:mean", "kwargs": {"data": [1, 2, 3, 6]}},
            }
        },
    )
    result = execute(runtime, plan, "mean")
    assert result == AttemptResult(Outcome.SUCCEEDED)
    stored = node(sqlite_store, plan, "mean")
    assert stored.status is NodeStatus.SUCCEEDED
    assert stored.output == 3
    assert stored.attempts == 1
    assert sqlite_store.run_status(job_run_id=plan.job_run_id) is RunStatus.SUCCEEDED


def test_a_node_sees_its_upstream_outputs(sqlite_store: Store, runtime: NodeRuntime) -> None:
    plan = start_run(
        sqlite_store,
        {
            "first": {"type": "sleep", "config": {"seconds": 0}},
            "second": {
                "type": "python",
                "config": {"callable": here("chatty"), "kwargs": {"greeting": "hi"}},
            },
        },
        {"second": ["first"]},
    )
    assert execute(runtime, plan, "first").outcome is Outcome.SUCCEEDED
    assert execute(runtime, plan, "second").outcome is Outcome.SUCCEEDED
    assert node(sqlite_store, plan, "second").output == {
        "greeting": "hi",
        "upstream": {"first": {"slept_seconds": 0.0}},
    }


def test_a_failing_node_retries_then_fails_on_its_last_attempt(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store,
        {
            "flaky": {"type": "fail", "config": {"message": "source down"}, "retries": 1},
            "after": "noop",
        },
        {"after": ["flaky"]},
    )
    first = execute(runtime, plan, "flaky", attempt=1)
    assert first.outcome is Outcome.RETRY
    assert first.error == "source down"
    assert node(sqlite_store, plan, "flaky").status is NodeStatus.RETRYING
    assert node(sqlite_store, plan, "after").status is NodeStatus.QUEUED

    last = execute(runtime, plan, "flaky", attempt=2)
    assert last.outcome is Outcome.FAILED
    assert last.error == "source down"
    assert last.skipped == ("after",)
    flaky = node(sqlite_store, plan, "flaky")
    assert (flaky.status, flaky.attempts, flaky.error) == (NodeStatus.FAILED, 2, "source down")
    assert node(sqlite_store, plan, "after").status is NodeStatus.SKIPPED
    assert sqlite_store.run_status(job_run_id=plan.job_run_id) is RunStatus.FAILED


def test_a_node_that_recovers_on_a_retry_succeeds(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store, {"flaky": {"type": "fail", "config": {"times": 1}, "retries": 2}}
    )
    assert execute(runtime, plan, "flaky", attempt=1).outcome is Outcome.RETRY
    assert execute(runtime, plan, "flaky", attempt=2).outcome is Outcome.SUCCEEDED
    assert node(sqlite_store, plan, "flaky").output == {"succeeded_on_attempt": 2}


def test_a_duplicate_delivery_is_not_run_twice(sqlite_store: Store, runtime: NodeRuntime) -> None:
    plan = start_run(
        sqlite_store,
        {
            "a": {
                "type": "python",
                "config": {"callable": here("chatty"), "kwargs": {"greeting": "once"}},
            }
        },
    )
    assert execute(runtime, plan, "a").outcome is Outcome.SUCCEEDED
    assert execute(runtime, plan, "a").outcome is Outcome.NOT_RUN
    assert sum("once from stdout" in r.message for r in logs(sqlite_store, plan)) == 1


def test_a_node_of_a_killed_run_is_not_run(sqlite_store: Store, runtime: NodeRuntime) -> None:
    plan = start_run(sqlite_store, {"a": "noop"})
    sqlite_store.request_cancel(job_run_id=plan.job_run_id)
    assert execute(runtime, plan, "a").outcome is Outcome.NOT_RUN
    assert node(sqlite_store, plan, "a").attempts == 0


def test_stdout_stderr_and_logger_lines_are_stored_with_node_and_attempt(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store,
        {
            "talk": {
                "type": "python",
                "config": {"callable": here("chatty"), "kwargs": {"greeting": "hello"}},
                "retries": 3,
            }
        },
    )
    assert execute(runtime, plan, "talk", attempt=2).outcome is Outcome.SUCCEEDED
    records = logs(sqlite_store, plan)
    by_message = {record.message: record for record in records}
    assert {r.node_id for r in records} == {"talk"}
    assert {r.attempt for r in records} == {2}
    assert by_message["hello from stdout"].level == "INFO"
    assert by_message["no newline at the end"].level == "INFO"
    assert by_message["a warning on stderr"].level == "WARNING"
    logger_lines = [r for r in records if "from the node logger, attempt 2" in r.message]
    assert len(logger_lines) == 1
    assert logger_lines[0].level == "INFO"


def test_the_failure_traceback_is_logged_at_error(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store,
        {"bad": {"type": "python", "config": {"callable": here("explode")}, "retries": 1}},
    )
    result = execute(runtime, plan, "bad", attempt=1)
    assert result.outcome is Outcome.RETRY
    assert result.error == "ValueError: the input was malformed"
    errors = [r for r in logs(sqlite_store, plan) if r.level == "ERROR"]
    assert len(errors) == 1
    assert errors[0].node_id == "bad"
    assert errors[0].attempt == 1
    assert "Traceback (most recent call last)" in errors[0].message
    assert "ValueError: the input was malformed" in errors[0].message
    assert "explode" in errors[0].message


def wait_until_running(store: Store, plan: RunPlan, node_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while node(store, plan, node_id).status is not NodeStatus.RUNNING:
        if time.monotonic() > deadline:
            pytest.fail(f"node {node_id!r} did not start within {timeout} s")
        time.sleep(0.02)


@pytest.mark.timeout(30)
def test_a_sleeping_node_stops_when_its_run_is_cancelled(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(sqlite_store, {"nap": {"type": "sleep", "config": {"seconds": 60}}})

    def kill() -> None:
        wait_until_running(sqlite_store, plan, "nap")
        sqlite_store.request_cancel(job_run_id=plan.job_run_id)

    killer = threading.Thread(target=kill)
    killer.start()
    result = execute(runtime, plan, "nap")  # returns long before 60 s, or the timeout fails it
    killer.join()
    assert result.outcome is Outcome.CANCELLED
    nap = node(sqlite_store, plan, "nap")
    assert nap.status is NodeStatus.CANCELLED
    assert nap.output is None
    assert sqlite_store.run_status(job_run_id=plan.job_run_id) is RunStatus.CANCELLED


def test_a_node_calling_sys_exit_fails_its_attempt_like_any_error(
    sqlite_store: Store, runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store,
        {"quitter": {"type": "python", "config": {"callable": here("leave")}, "retries": 1}},
    )
    first = execute(runtime, plan, "quitter", attempt=1)  # must not raise SystemExit
    assert first.outcome is Outcome.RETRY
    assert "SystemExit" in (first.error or "")
    assert execute(runtime, plan, "quitter", attempt=2).outcome is Outcome.FAILED
    quitter = node(sqlite_store, plan, "quitter")
    assert (quitter.status, quitter.attempts) == (NodeStatus.FAILED, 2)
    records = logs(sqlite_store, plan)
    assert [r.attempt for r in records if r.message == "giving up"] == [1, 2]
    assert [r.attempt for r in records if r.level == "ERROR"] == [1, 2]


def test_an_output_json_cannot_carry_is_still_recorded_as_json(store: Store) -> None:
    # Runs on SQLite and PostgreSQL: NaN and infinities are not JSON, and PostgreSQL's
    # json type refuses them, so the attempt must still be recorded with a JSON output.
    runtime = NodeRuntime(store, default_registry(), heartbeat_seconds=0.05)
    plan = start_run(store, {"m": {"type": "python", "config": {"callable": here("measure")}}})
    assert execute(runtime, plan, "m").outcome is Outcome.SUCCEEDED
    measured = node(store, plan, "m")
    assert measured.status is NodeStatus.SUCCEEDED
    json.dumps(measured.output, allow_nan=False)  # raises if NaN or inf were stored


# -- bounded storage ---------------------------------------------------------------------


def big_output(size: int) -> dict[str, str]:
    return {"body": "x" * size}


def upstream_size(context: NodeContext) -> int:
    return len(context.upstream_outputs["big"]["body"])


def loud_failure(size: int) -> None:
    print("y" * size)
    raise ValueError("cannot cast " + "z" * size)


@pytest.fixture
def bounded_runtime(sqlite_store: Store, tmp_path: Path) -> NodeRuntime:
    return NodeRuntime(
        sqlite_store,
        default_registry(),
        heartbeat_seconds=0.05,
        artifacts=ArtifactStore(str(tmp_path / "artifacts")),
        max_output_bytes=10_000,
    )


def test_a_large_output_goes_to_the_artifact_store_and_downstream_still_gets_it(
    sqlite_store: Store, bounded_runtime: NodeRuntime
) -> None:
    plan = start_run(
        sqlite_store,
        {
            "big": {
                "type": "python",
                "config": {"callable": here("big_output"), "kwargs": {"size": 50_000}},
            },
            "small": {
                "type": "python",
                "config": {"callable": here("big_output"), "kwargs": {"size": 10}},
            },
            "after": {"type": "python", "config": {"callable": here("upstream_size")}},
        },
        {"after": ["big"]},
    )
    for node_id in ("big", "small", "after"):
        assert execute(bounded_runtime, plan, node_id).outcome is Outcome.SUCCEEDED
    stored = node(sqlite_store, plan, "big").output["stored_output"]
    assert stored["bytes"] > 50_000
    assert stored["uri"].endswith("/big/attempt-1-output.json")
    assert node(sqlite_store, plan, "small").output == {"body": "x" * 10}
    assert node(sqlite_store, plan, "after").output == 50_000


def test_a_huge_error_and_log_line_are_cut_with_a_marker(
    sqlite_store: Store, bounded_runtime: NodeRuntime
) -> None:
    size = 5_000_000
    plan = start_run(
        sqlite_store,
        {
            "loud": {
                "type": "python",
                "config": {"callable": here("loud_failure"), "kwargs": {"size": size}},
            }
        },
    )
    assert execute(bounded_runtime, plan, "loud").outcome is Outcome.FAILED
    error = node(sqlite_store, plan, "loud").error
    assert len(error) < MAX_TEXT_CHARS + 200
    assert "[truncated by figway:" in error
    lines = logs(sqlite_store, plan)
    assert lines
    assert all(len(line.message) < MAX_TEXT_CHARS + 200 for line in lines)
    assert any(
        "y" * 100 in line.message and "truncated by figway" in line.message for line in lines
    )
