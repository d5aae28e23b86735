"""The store on SQLite and PostgreSQL: once-only transitions, failure, cancel, stats and logs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backends.model.errors import StoreError
from backends.model.status import NodeStatus, RunStatus
from backends.store import LogRecord, Store, create_database_engine, upgrade, utcnow
from tests.support.plans import journal, make_plan, start_run

RUNNING = NodeStatus.RUNNING


def node_status(store: Store, job_run_id: str, node_id: str) -> NodeStatus:
    run = store.get_run(job_run_id=job_run_id)
    assert run is not None
    return run.nodes[node_id].status


def run_status(store: Store, job_run_id: str) -> RunStatus:
    status = store.run_status(job_run_id=job_run_id)
    assert status is not None
    return status


def finish(store: Store, job_run_id: str, node_id: str, status: NodeStatus) -> None:
    """Run attempt 1 of a node to ``status``."""
    assert store.record_node(job_run_id=job_run_id, node_id=node_id, attempt=1, status=RUNNING)
    outcome = store.record_node(job_run_id=job_run_id, node_id=node_id, attempt=1, status=status)
    assert outcome.applied


def test_create_run_is_idempotent_on_job_run_id(store: Store) -> None:
    plan = make_plan({"a": "noop", "b": "noop"}, job_run_id="run-1")
    assert store.create_run(plan=plan, backend="rq", from_job="job0") is True
    other = make_plan({"z": "noop"}, workflow_id="other", job_run_id="run-1")
    assert store.create_run(plan=other, backend="prefect", from_job=None) is False

    run = store.get_run(job_run_id="run-1")
    assert run is not None
    assert (run.workflow_id, run.backend, run.status, run.from_job) == (
        "wf",
        "rq",
        RunStatus.PENDING,
        "job0",
    )
    assert list(run.nodes) == ["a", "b"]
    assert store.stats()["total"] == 1


def test_mark_submitted_queues_the_run_and_its_nodes(store: Store) -> None:
    plan = make_plan({"a": "noop", "b": "noop"}, {"b": ["a"]})
    store.create_run(plan=plan, backend="rq", from_job=None)
    returned = store.mark_submitted(job_run_id=plan.job_run_id)
    assert returned.status is RunStatus.QUEUED
    assert {node.status for node in returned.nodes.values()} == {NodeStatus.QUEUED}
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run == returned
    assert run.submitted_at is not None
    assert {node.status for node in run.nodes.values()} == {NodeStatus.QUEUED}


def test_load_plan_returns_the_recorded_plan(store: Store) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop"}, {"b": ["a"]}, parameters={"day": "mon"})
    loaded = store.load_plan(job_run_id=plan.job_run_id)
    assert loaded == plan
    assert store.load_plan(job_run_id="no-such-run") is None


def test_record_node_applies_each_transition_once(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    first = store.record_node(job_run_id=plan.job_run_id, node_id="a", attempt=1, status=RUNNING)
    second = store.record_node(job_run_id=plan.job_run_id, node_id="a", attempt=1, status=RUNNING)
    assert first.applied is True
    assert second.applied is False
    assert journal(store, plan.job_run_id).count(("a", 1, "running")) == 1

    done = store.record_node(
        job_run_id=plan.job_run_id,
        node_id="a",
        attempt=1,
        status=NodeStatus.SUCCEEDED,
        output={"rows": 3},
    )
    again = store.record_node(
        job_run_id=plan.job_run_id,
        node_id="a",
        attempt=1,
        status=NodeStatus.SUCCEEDED,
        output={"rows": 99},
    )
    assert done.applied is True
    assert again.applied is False
    assert journal(store, plan.job_run_id).count(("a", 1, "succeeded")) == 1
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run.nodes["a"].output == {"rows": 3}
    assert run.nodes["a"].attempts == 1
    assert run.status is RunStatus.SUCCEEDED


def test_record_node_for_an_unknown_node_raises(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    with pytest.raises(StoreError, match="ghost"):
        store.record_node(job_run_id=plan.job_run_id, node_id="ghost", attempt=1, status=RUNNING)


@pytest.mark.parametrize("final", [NodeStatus.SUCCEEDED, NodeStatus.FAILED])
@pytest.mark.parametrize("late", [RUNNING, NodeStatus.FAILED, NodeStatus.SUCCEEDED])
def test_a_terminal_node_refuses_further_transitions(
    store: Store, final: NodeStatus, late: NodeStatus
) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop"})
    finish(store, plan.job_run_id, "a", final)
    outcome = store.record_node(job_run_id=plan.job_run_id, node_id="a", attempt=2, status=late)
    assert outcome.applied is False
    assert outcome.node_status is final
    assert node_status(store, plan.job_run_id, "a") is final
    assert ("a", 2, late.value) not in journal(store, plan.job_run_id)


def test_a_stale_attempt_cannot_start_again(store: Store) -> None:
    plan = start_run(store, {"a": {"type": "noop", "retries": 2}})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=NodeStatus.RETRYING)
    store.record_node(job_run_id=jid, node_id="a", attempt=2, status=RUNNING)
    store.record_node(job_run_id=jid, node_id="a", attempt=2, status=NodeStatus.RETRYING)
    late = store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    assert late.applied is False
    assert node_status(store, jid, "a") is NodeStatus.RETRYING


def test_a_node_never_starts_before_its_upstream_nodes_succeeded(store: Store) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop"}, {"b": ["a"]})
    jid = plan.job_run_id
    early = store.start_attempt(job_run_id=jid, node_id="b", attempt=1)  # a duplicate released b
    assert early.outcome.applied is False
    assert node_status(store, jid, "b") is NodeStatus.QUEUED
    finish(store, jid, "a", NodeStatus.SUCCEEDED)
    assert store.start_attempt(job_run_id=jid, node_id="b", attempt=1).outcome.applied


def test_running_is_refused_while_the_run_is_cancelling(store: Store) -> None:
    plan = start_run(store, {"a": {"type": "noop", "retries": 1}, "b": "noop"})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=NodeStatus.RETRYING)
    store.record_node(job_run_id=jid, node_id="b", attempt=1, status=RUNNING)
    assert store.request_cancel(job_run_id=jid) is RunStatus.RUNNING
    assert run_status(store, jid) is RunStatus.CANCELLING

    retry = store.record_node(job_run_id=jid, node_id="a", attempt=2, status=RUNNING)
    assert retry.applied is False
    assert retry.run_status is RunStatus.CANCELLING
    assert node_status(store, jid, "a") is NodeStatus.RETRYING
    assert ("a", 2, "running") not in journal(store, jid)


def test_a_final_failure_skips_transitive_downstream_nodes_only(store: Store) -> None:
    plan = start_run(
        store,
        {"a": "noop", "b": "noop", "c": "noop", "d": "noop", "e": "noop"},
        {"b": ["a"], "c": ["b"], "e": ["d"]},
    )
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    failed = store.record_node(
        job_run_id=jid, node_id="a", attempt=1, status=NodeStatus.FAILED, error="boom"
    )
    assert failed.applied is True
    assert failed.skipped == ("b", "c")
    assert failed.run_status is RunStatus.RUNNING  # d and e have yet to run

    run = store.get_run(job_run_id=jid)
    assert run is not None
    assert run.nodes["a"].error == "boom"
    assert run.nodes["b"].status is NodeStatus.SKIPPED
    assert run.nodes["c"].status is NodeStatus.SKIPPED
    assert "'a'" in (run.nodes["c"].error or "")
    assert run.nodes["d"].status is NodeStatus.QUEUED
    assert run.nodes["e"].status is NodeStatus.QUEUED

    finish(store, jid, "d", NodeStatus.SUCCEEDED)
    assert run_status(store, jid) is RunStatus.RUNNING
    finish(store, jid, "e", NodeStatus.SUCCEEDED)
    run = store.get_run(job_run_id=jid)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error == "1 node(s) failed"
    assert run.finished_at is not None
    assert journal(store, jid).count(("", 0, "failed")) == 1


def test_a_retrying_node_does_not_skip_its_downstream(store: Store) -> None:
    plan = start_run(store, {"a": {"type": "noop", "retries": 1}, "b": "noop"}, {"b": ["a"]})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    outcome = store.record_node(job_run_id=jid, node_id="a", attempt=1, status=NodeStatus.RETRYING)
    assert outcome.skipped == ()
    assert node_status(store, jid, "b") is NodeStatus.QUEUED


def test_the_run_succeeds_when_every_node_succeeded(store: Store) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop"}, {"b": ["a"]})
    finish(store, plan.job_run_id, "a", NodeStatus.SUCCEEDED)
    assert run_status(store, plan.job_run_id) is RunStatus.RUNNING
    finish(store, plan.job_run_id, "b", NodeStatus.SUCCEEDED)
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert run.started_at is not None
    assert run.finished_at is not None
    assert run.started_at <= run.finished_at


def test_request_cancel_then_complete_cancel(store: Store) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop", "c": "noop"}, {"b": ["a"]})
    jid = plan.job_run_id
    finish(store, jid, "c", NodeStatus.SUCCEEDED)
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)

    assert store.request_cancel(job_run_id=jid) is RunStatus.RUNNING
    run = store.get_run(job_run_id=jid)
    assert run is not None
    assert run.status is RunStatus.CANCELLING
    assert run.nodes["a"].status is RUNNING  # running nodes are the backend's to stop
    assert run.nodes["b"].status is NodeStatus.CANCELLED  # waiting nodes never start
    assert run.nodes["c"].status is NodeStatus.SUCCEEDED
    assert store.cancelling_runs() == [jid]
    # A second kill while the first is under way says so and changes nothing.
    assert store.request_cancel(job_run_id=jid) is RunStatus.CANCELLING

    assert store.complete_cancel(job_run_id=jid) is RunStatus.CANCELLED
    run = store.get_run(job_run_id=jid)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    assert run.finished_at is not None
    assert run.nodes["a"].status is NodeStatus.CANCELLED
    assert run.nodes["c"].status is NodeStatus.SUCCEEDED
    assert store.cancelling_runs() == []

    # Cancelling a finished run reports its status and changes nothing.
    assert store.request_cancel(job_run_id=jid) is RunStatus.CANCELLED
    assert store.complete_cancel(job_run_id=jid) is RunStatus.CANCELLED
    assert journal(store, jid).count(("", 0, "cancelled")) == 1


def test_a_late_success_after_a_kill_is_refused(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    store.request_cancel(job_run_id=jid)
    store.complete_cancel(job_run_id=jid)
    late = store.record_node(job_run_id=jid, node_id="a", attempt=1, status=NodeStatus.SUCCEEDED)
    assert late.applied is False
    assert late.node_status is NodeStatus.CANCELLED
    assert run_status(store, jid) is RunStatus.CANCELLED


def test_complete_cancel_does_nothing_unless_cancelling(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    assert store.complete_cancel(job_run_id=plan.job_run_id) is RunStatus.QUEUED
    assert node_status(store, plan.job_run_id, "a") is NodeStatus.QUEUED


def test_cancelling_an_unknown_run_raises(store: Store) -> None:
    with pytest.raises(StoreError, match="no-such-run"):
        store.request_cancel(job_run_id="no-such-run")


def test_stats_count_runs_by_status_backend_and_workflow(store: Store) -> None:
    succeeded = start_run(store, {"a": "noop"}, workflow_id="alpha")
    finish(store, succeeded.job_run_id, "a", NodeStatus.SUCCEEDED)
    failed = start_run(store, {"a": "noop"}, workflow_id="alpha")
    finish(store, failed.job_run_id, "a", NodeStatus.FAILED)
    start_run(store, {"a": "noop"}, workflow_id="beta")  # queued
    pending = make_plan({"a": "noop"}, workflow_id="beta")
    store.create_run(plan=pending, backend="prefect", from_job=None)

    stats = store.stats()
    assert stats["total"] == 4
    assert stats["by_status"] == {
        "pending": 1,
        "queued": 1,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelling": 0,
        "cancelled": 0,
    }
    assert stats["by_backend"] == {"rq": 3, "prefect": 1}
    assert stats["by_workflow"] == {
        "alpha": {"total": 2, "succeeded": 1, "failed": 1},
        "beta": {"total": 2, "queued": 1, "pending": 1},
    }


def test_stats_of_an_empty_database(store: Store) -> None:
    stats = store.stats()
    assert stats["total"] == 0
    assert set(stats["by_status"]) == {status.value for status in RunStatus}
    assert set(stats["by_status"].values()) == {0}
    assert stats["by_backend"] == {}
    assert stats["by_workflow"] == {}


def log_record(job_run_id: str, index: int) -> LogRecord:
    return LogRecord(job_run_id, f"node{index % 2}", 1, utcnow(), "INFO", f"line {index}")


def test_logs_come_back_in_order_and_page_with_after_id(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    other = start_run(store, {"a": "noop"})
    jid = plan.job_run_id
    store.append_logs([log_record(jid, i) for i in range(3)])
    store.append_logs([log_record(other.job_run_id, 99)])
    store.append_logs([log_record(jid, i) for i in range(3, 6)])

    lines = store.logs(job_run_id=jid)
    assert [record.message for _, record in lines] == [f"line {i}" for i in range(6)]
    ids = [line_id for line_id, _ in lines]
    assert ids == sorted(ids)
    assert {record.job_run_id for _, record in lines} == {jid}

    first_page = store.logs(job_run_id=jid, limit=4)
    assert [r.message for _, r in first_page] == [f"line {i}" for i in range(4)]
    rest = store.logs(job_run_id=jid, after_id=first_page[-1][0])
    assert [r.message for _, r in rest] == ["line 4", "line 5"]
    assert store.logs(job_run_id=jid, after_id=ids[-1]) == []
    assert store.logs(job_run_id="no-such-run") == []


def test_logs_keep_node_attempt_level_and_time(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    at = utcnow()
    store.append_logs([LogRecord(plan.job_run_id, "a", 3, at, "ERROR", "it broke")])
    [(_, record)] = store.logs(job_run_id=plan.job_run_id)
    assert record == LogRecord(plan.job_run_id, "a", 3, record.at, "ERROR", "it broke")
    assert abs(record.at - at) < timedelta(milliseconds=1)
    assert record.at.tzinfo is not None


def test_heartbeat_is_false_after_a_cancel(store: Store) -> None:
    plan = start_run(store, {"a": "noop"})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    assert store.heartbeat(job_run_id=jid, node_id="a", attempt=1) is True
    store.request_cancel(job_run_id=jid)
    assert store.heartbeat(job_run_id=jid, node_id="a", attempt=1) is False


def test_heartbeat_is_false_for_an_attempt_that_is_not_running(store: Store) -> None:
    plan = start_run(store, {"a": {"type": "noop", "retries": 1}})
    jid = plan.job_run_id
    assert store.heartbeat(job_run_id=jid, node_id="a", attempt=1) is False  # not started
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    store.record_node(job_run_id=jid, node_id="a", attempt=2, status=RUNNING)
    assert store.heartbeat(job_run_id=jid, node_id="a", attempt=1) is False  # superseded
    assert store.heartbeat(job_run_id=jid, node_id="a", attempt=2) is True


def test_a_new_attempt_over_a_running_one_journals_the_lost_attempt(store: Store) -> None:
    plan = start_run(store, {"a": {"type": "noop", "retries": 2}})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    second = store.record_node(job_run_id=jid, node_id="a", attempt=2, status=RUNNING)
    assert second.applied is True

    node_rows = [row for row in journal(store, jid) if row[0] == "a"]
    assert node_rows == [
        ("a", 0, "queued"),
        ("a", 1, "running"),
        ("a", 2, "running"),
        ("a", 1, "retrying"),
    ]
    run = store.get_run(job_run_id=jid)
    assert run is not None
    assert run.nodes["a"].status is RUNNING
    assert run.nodes["a"].attempts == 2


def test_stale_nodes_lists_running_nodes_without_a_heartbeat(store: Store) -> None:
    plan = start_run(store, {"a": "noop", "b": "noop"})
    jid = plan.job_run_id
    store.record_node(job_run_id=jid, node_id="a", attempt=1, status=RUNNING)
    assert store.stale_nodes(silent_for=timedelta(hours=1)) == []
    stale = store.stale_nodes(silent_for=timedelta(seconds=-1))
    assert [(s.job_run_id, s.node_id, s.attempt, s.backend) for s in stale] == [(jid, "a", 1, "rq")]


def test_the_embedded_database_file_and_its_folder_are_private(tmp_path: Path) -> None:
    database = tmp_path / "data" / "figway.db"
    engine = create_database_engine(f"sqlite:///{database}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    assert database.parent.stat().st_mode & 0o777 == 0o700
    for made in database.parent.iterdir():  # the file, and SQLite's -wal and -shm beside it
        assert made.stat().st_mode & 0o777 == 0o600, made
