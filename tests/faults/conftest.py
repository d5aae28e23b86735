"""The fault suite's stack: a gateway and two RQ workers on a Redis and a PostgreSQL link
the tests own.

Redis is a ``redis-server`` of the suite's own (:class:`~tests.support.faults.OwnRedis`),
so a test may stop, kill or wipe it; PostgreSQL is the session's database reached
through a link the test may cut (:class:`~tests.support.faults.CuttableLink`), for
the gateway and the workers alike. One stack serves a whole module: each test
starts its own runs, injects its fault, and leaves the stack whole again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from backends.store import create_database_engine
from tests.support.faults import CuttableLink, OwnRedis
from tests.support.figway_stack import Stack
from tests.support.services import empty_tables

#: Settings of every process of the fault stack: short windows, so faults settle fast.
FAULT_SETTINGS = {
    "FIGWAY_NODE_SILENCE_SECONDS": "3",
    "FIGWAY_RQ_WORKER_SILENCE_SECONDS": "8",
    "FIGWAY_RECONCILE_INTERVAL_SECONDS": "1",
    "FIGWAY_SUBMIT_CLAIM_SECONDS": "3",
    "FIGWAY_BACKEND_CHECK_SECONDS": "1",
}
WORKERS = ("fault-worker-a", "fault-worker-b")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the fault suite runs a Redis of its own")
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pg_link(pg_url: str) -> Iterator[CuttableLink]:
    url = make_url(pg_url)
    link = CuttableLink((url.host or "127.0.0.1", url.port or 5432))
    yield link
    link.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file :func:`~tests.support.faults.count_execution` nodes note executions in."""
    return tmp_path_factory.mktemp("ledger") / "executions.txt"


@pytest.fixture(scope="module")
def stack(
    pg_url: str,
    pg_link: CuttableLink,
    own_redis: OwnRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A gateway and two workers, reaching PostgreSQL through ``pg_link``."""
    engine = create_database_engine(pg_url)
    empty_tables(engine)
    linked = make_url(pg_url).set(port=pg_link.port).render_as_string(hide_password=False)
    running = Stack(
        database_url=linked,
        redis_url=own_redis.url(),
        log_dir=tmp_path_factory.mktemp("fault-stack"),
        settings=dict(FAULT_SETTINGS),
    )
    try:
        running.start_gateway()
        running.start_workers(*WORKERS)
        yield running
    finally:
        running.close()
        empty_tables(engine)
        engine.dispose()
