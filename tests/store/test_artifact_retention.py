"""Retention: the node outputs of runs finished long ago are removed, once, and only theirs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from backends.artifacts import ArtifactStore
from backends.model.status import RunStatus
from backends.store import Store, create_database_engine, upgrade
from backends.store.artifact_records import ArtifactRecords
from backends.store.models import Run
from gateway.cli.main import main
from gateway.upkeep.artifact_janitor import ArtifactJanitor
from tests.support.plans import make_plan

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def record_run(
    store: Store,
    artifacts: ArtifactStore,
    *,
    finished_hours_ago: float | None,
    now: datetime = NOW,
) -> str:
    """A run with one table output on disk (and one in its shadow area), finished that
    long before ``now`` (None: still running)."""
    plan = make_plan({"a": "noop"}, job_run_id=f"ret-{uuid.uuid4().hex[:10]}")
    assert store.create_run(plan=plan, backend="rq", from_job=None)
    status, finished = RunStatus.RUNNING, None
    if finished_hours_ago is not None:
        status, finished = RunStatus.SUCCEEDED, now - timedelta(hours=finished_hours_ago)
    with store.engine.begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.job_run_id == plan.job_run_id)
            .values(status=status, finished_at=finished)
        )
    for sandboxed in (False, True):
        attempt = artifacts.for_attempt(
            job_run_id=plan.job_run_id, node_id="a", attempt=1, sandboxed=sandboxed
        )
        schema = pa.schema([("x", pa.int64())])
        with attempt.new_table(schema) as table:
            table.write(pa.record_batch([pa.array([1, 2])], schema=schema))
            table.finish()
    return plan.job_run_id


def files_of(artifacts: ArtifactStore, job_run_id: str) -> int:
    return sum(
        len(artifacts.fs.find(artifacts.run_path(job_run_id, sandboxed=s))) for s in (False, True)
    )


def purged_at(store: Store, job_run_id: str) -> datetime | None:
    with store.engine.connect() as connection:
        return connection.scalar(
            select(Run.artifacts_purged_at).where(Run.job_run_id == job_run_id)
        )


def test_only_runs_finished_before_the_retention_lose_their_outputs(
    store: Store, tmp_path: Path
) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    old = record_run(store, artifacts, finished_hours_ago=200)
    recent = record_run(store, artifacts, finished_hours_ago=2)
    running = record_run(store, artifacts, finished_hours_ago=None)
    janitor = ArtifactJanitor(
        ArtifactRecords(store.engine), artifacts, retention=timedelta(hours=168)
    )

    report = janitor.purge_expired(now=NOW)

    assert (report.runs, report.files) == (1, 2)  # the run's file and its shadow area's
    assert files_of(artifacts, old) == 0
    assert (files_of(artifacts, recent), files_of(artifacts, running)) == (2, 2)
    assert purged_at(store, old) is not None
    assert purged_at(store, recent) is None
    # Marked: the next round does not visit it again.
    assert janitor.purge_expired(now=NOW).runs == 0


def test_a_shorter_retention_given_for_one_round_reaches_recent_runs(
    store: Store, tmp_path: Path
) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    recent = record_run(store, artifacts, finished_hours_ago=2)
    janitor = ArtifactJanitor(
        ArtifactRecords(store.engine), artifacts, retention=timedelta(hours=168)
    )
    assert janitor.purge_expired(now=NOW, retention=timedelta(hours=1)).runs == 1
    assert files_of(artifacts, recent) == 0


def test_runs_are_purged_in_batches_until_none_is_left(store: Store, tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    old = [record_run(store, artifacts, finished_hours_ago=300 + i) for i in range(5)]
    janitor = ArtifactJanitor(ArtifactRecords(store.engine), artifacts, retention=timedelta(1))
    assert janitor.purge_expired(now=NOW, batch=2).runs == 5
    assert all(files_of(artifacts, job_run_id) == 0 for job_run_id in old)


def test_a_store_that_fails_leaves_the_run_unmarked_for_the_next_round(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    old = record_run(store, artifacts, finished_hours_ago=200)
    janitor = ArtifactJanitor(ArtifactRecords(store.engine), artifacts, retention=timedelta(1))

    def refuse(job_run_id: str) -> int:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(artifacts, "purge_run", refuse)
    assert janitor.purge_expired(now=NOW).runs == 0
    assert purged_at(store, old) is None
    monkeypatch.undo()
    assert janitor.purge_expired(now=NOW).runs == 1


def test_figway_artifacts_purge_removes_what_is_older_than_asked(
    cli_env: Path, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "figway.db"
    database.parent.mkdir(parents=True)
    engine = create_database_engine(f"sqlite:///{database}")
    upgrade(engine)
    artifacts = ArtifactStore(str(tmp_path / "data" / "artifacts"))
    store = Store(engine)
    day_old = record_run(store, artifacts, finished_hours_ago=24, now=datetime.now(UTC))
    engine.dispose()

    where = CliRunner().invoke(main, ["artifacts", "where"], catch_exceptions=False)
    assert where.output.strip() == str((tmp_path / "data" / "artifacts").resolve())
    kept = CliRunner().invoke(
        main, ["artifacts", "purge", "--older-than-hours", "48"], catch_exceptions=False
    )
    assert kept.output.strip() == "removed 0 files of 0 finished runs"
    assert files_of(artifacts, day_old) == 2
    removed = CliRunner().invoke(
        main, ["artifacts", "purge", "--older-than-hours", "12"], catch_exceptions=False
    )
    assert removed.output.strip() == "removed 2 files of 1 finished runs"
    assert files_of(artifacts, day_old) == 0
