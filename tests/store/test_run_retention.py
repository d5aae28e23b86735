"""Run retention (FIGWAY_RUN_RETENTION_DAYS): only runs nothing needs any more are deleted."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from backends.model.status import NodeStatus
from backends.store import LogRecord, Store, utcnow
from backends.store.metric_records import END_COUNTED
from backends.store.models import LogLine, NodeRun, Run, Transition
from backends.store.run_retention import RunRetentionRecords
from gateway.upkeep.run_retention import RunRetention
from tests.support.plans import start_run


def finished(store: Store, *, days_ago: float, purged: bool = True, counted: bool = True) -> str:
    run = start_run(store, {"a": "noop"}).job_run_id
    line = LogRecord(job_run_id=run, node_id="a", attempt=1, at=utcnow(), level="INFO", message="x")
    for status in (NodeStatus.RUNNING, NodeStatus.SUCCEEDED):
        store.record_node(job_run_id=run, node_id="a", attempt=1, status=status, logs=[line])
    ended = utcnow() - timedelta(days=days_ago)
    with store.engine.begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.job_run_id == run)
            .values(
                finished_at=ended,
                artifacts_purged_at=ended if purged else None,
                metrics_stage=END_COUNTED if counted else 0,
            )
        )
    return run


def rows_of(store: Store, run: str) -> list[int]:
    with store.engine.connect() as connection:
        return [
            connection.scalar(
                select(func.count()).select_from(table).where(table.job_run_id == run)
            )
            or 0
            for table in (Run, NodeRun, Transition, LogLine)
        ]


def test_only_old_counted_and_purged_runs_go_with_all_their_rows(store: Store) -> None:
    old = finished(store, days_ago=40)
    recent = finished(store, days_ago=5)
    files_left = finished(store, days_ago=40, purged=False)
    not_counted = finished(store, days_ago=40, counted=False)
    running = start_run(store, {"a": "noop"}).job_run_id
    assert rows_of(store, old) == [1, 1, 7, 2]

    retention = RunRetention(RunRetentionRecords(store.engine), retention=timedelta(days=30))
    assert retention.delete_expired(batch=1) == 1  # batches until nothing is left
    assert rows_of(store, old) == [0, 0, 0, 0]
    for kept in (recent, files_left, not_counted, running):
        assert rows_of(store, kept)[0] == 1, kept
    assert retention.delete_expired() == 0
