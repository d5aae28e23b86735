"""Pooled PostgreSQL connections are pinged only after idling (``IDLE_PING_SECONDS``):
one that died while idle is replaced before anyone uses it, and one that died right after
use fails one call as unreachable, after which the pool hands out working ones."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from backends.model.errors import StoreUnavailableError
from backends.store import Store, create_database_engine
from backends.store import database as database_module
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.service


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_database_engine(pg_url, pool_size=1)
    yield engine
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        pid: int = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_that_died_while_idle_is_replaced_unseen(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 0.0)  # every checkout "idled"
    first = backend_pid(engine)
    terminate(first)
    # The ping finds it dead: the store's call gets a new connection and never sees it.
    assert Store(engine).run_status(job_run_id="no-such-run") is None
    assert backend_pid(engine) != first


def test_a_connection_that_died_just_after_use_fails_once_then_the_pool_recovers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 3600.0)  # never pinged
    first = backend_pid(engine)
    terminate(first)
    store = Store(engine)
    with pytest.raises(StoreUnavailableError):
        store.run_status(job_run_id="no-such-run")
    assert store.run_status(job_run_id="no-such-run") is None
    assert backend_pid(engine) != first
