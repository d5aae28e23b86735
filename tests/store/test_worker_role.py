"""The worker role (``figway db grant-worker``) on the real PostgreSQL: a worker records
attempts, and cannot write keys, routes, definitions or the metrics ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from backends.model.status import RunStatus
from backends.nodes import default_registry
from backends.runtime.attempts import NodeRuntime, Outcome
from backends.store import Store, create_database_engine
from gateway.cli.main import main
from tests.conftest import PG_ADMIN_URL
from tests.support.plans import start_run

pytestmark = pytest.mark.service


@pytest.fixture
def worker_url(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh login role granted by `figway db grant-worker`, as a worker's URL."""
    role = f"figway_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    monkeypatch.setenv("FIGWAY_DATABASE_URL", pg_url)
    result = CliRunner().invoke(main, ["db", "grant-worker", role])
    assert result.exit_code == 0, result.output
    assert f"role {role} may now run figway workers" in result.output
    yield pg_url.replace("postgres@", f"{role}@", 1)
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as db:
        db.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP ROLE {role}")


def test_a_worker_role_records_a_whole_run(pg_url: str, worker_url: str) -> None:
    gateway_store = Store(create_database_engine(pg_url))
    plan = start_run(gateway_store, {"a": "noop", "b": "noop"}, {"b": ["a"]})
    worker_engine = create_database_engine(worker_url)
    runtime = NodeRuntime(Store(worker_engine), default_registry(), heartbeat_seconds=0.05)
    for node_id in ("a", "b"):
        result = runtime.execute(job_run_id=plan.job_run_id, node_id=node_id, attempt=1)
        assert result.outcome is Outcome.SUCCEEDED, result.error
    assert gateway_store.run_status(job_run_id=plan.job_run_id) is RunStatus.SUCCEEDED
    worker_engine.dispose()
    gateway_store.engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO api_keys (key_id, name, secret_hash, scopes, created_at, created_by) "
        "VALUES ('k', 'n', 'h', 'admin', now(), 'node')",
        "UPDATE api_keys SET scopes = 'admin'",
        "UPDATE workflows SET definition = '{}'",
        "DELETE FROM guard_trips",
        "DELETE FROM rules_applied",
        "DELETE FROM metric_totals",
        "SELECT secret_hash FROM api_keys",
    ],
)
def test_a_worker_role_cannot_touch_keys_routes_or_definitions(
    worker_url: str, statement: str
) -> None:
    engine = create_database_engine(worker_url)
    with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as c:
        c.execute(text(statement))
    engine.dispose()


def test_grant_worker_names_a_missing_role(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGWAY_DATABASE_URL", pg_url)
    result = CliRunner().invoke(main, ["db", "grant-worker", "no_such_role_here"])
    assert result.exit_code == 1
    assert "there is no role 'no_such_role_here': create it first" in result.output
