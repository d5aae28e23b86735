"""The production stack for integration tests: a gateway and RQ workers as real processes.

Each test gets a gateway of its own on the session's PostgreSQL database
(emptied before and after) and Redis database 9 (flushed before and after);
it starts the workers it needs. Every process is killed at the end, whatever
the outcome, and a failing test shows their logs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.store import create_database_engine
from tests.support.figway_stack import FIGWAY, Stack, clean_env
from tests.support.prefect_services import PrefectServices, shared_prefect_services
from tests.support.prefect_stack import PrefectStack, prefect_stack
from tests.support.services import empty_tables


@pytest.fixture(scope="module")
def upgraded_pg_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session database, brought up to date by `figway db upgrade` as an operator would."""
    result = subprocess.run(
        [FIGWAY, "db", "upgrade"],
        env=clean_env({"FIGWAY_DATABASE_URL": pg_url}),
        cwd=tmp_path_factory.mktemp("db-upgrade"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"`figway db upgrade` failed:\n{result.stdout}{result.stderr}"
    assert "database is up to date" in result.stdout
    return pg_url


@pytest.fixture(scope="session")
def prefect_services(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServices]:
    """The session's Prefect server and worker (shared with the contract suite)."""
    with shared_prefect_services(pg_url, tmp_path_factory.mktemp("prefect-services")) as services:
        yield services


@pytest.fixture
def stack(upgraded_pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A running gateway on the real services; tests add workers with `stack.start_workers`."""
    engine = create_database_engine(upgraded_pg_url)
    empty_tables(engine)
    running = Stack(database_url=upgraded_pg_url, redis_url=redis_url, log_dir=tmp_path)
    try:
        running.start_gateway()
        yield running
    finally:
        running.close()
        empty_tables(engine)
        engine.dispose()


@pytest.fixture
def prefect_gateway(
    upgraded_pg_url: str, redis_url: str, tmp_path: Path, prefect_services: PrefectServices
) -> Iterator[PrefectStack]:
    """A gateway whose runs go to the session's real Prefect server and worker."""
    with prefect_stack(
        database_url=upgraded_pg_url,
        redis_url=redis_url,
        log_dir=tmp_path,
        services=prefect_services,
    ) as running:
        yield running
