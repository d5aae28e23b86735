"""Fixtures shared by every test folder: real PostgreSQL and Redis, cleaned around each use.

The service tests need PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379 and
MariaDB on 127.0.0.1:3306 (``make services`` starts them). Each test session works
in a database of its own, created here and dropped at the end; Redis tests use one
logical database that is flushed before and after every test.

Every figway process a test session starts (gateways, RQ workers, the Prefect
worker's flow runs) shares one artifact store, as a deployment's workers share a
bucket: ``SESSION_ARTIFACTS``, removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from backends.store import Store, create_database_engine, upgrade
from tests.support.api_client import Gateway
from tests.support.figway_stack import Stack
from tests.support.gateway import production_gateway
from tests.support.policy import test_policy_env
from tests.support.services import empty_tables, flushed_redis

PG_ADMIN_URL = os.environ.get(
    "FIGWAY_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_TEST_URL = os.environ.get("FIGWAY_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

#: The artifact store of every figway process this session starts (see the module docstring).
SESSION_ARTIFACTS = Path(tempfile.mkdtemp(prefix="figway-test-artifacts-"))
os.environ["FIGWAY_TEST_ARTIFACT_URL"] = str(SESSION_ARTIFACTS)
# In-process gateways on PostgreSQL would require API keys (production's default);
# access control has tests of its own (tests/access/test_api_keys.py), the rest drive it open.
os.environ["FIGWAY_AUTH"] = "off"
# Tests call their own functions from python nodes (tests/support/policy.py).
os.environ.update(test_policy_env())


@pytest.fixture(scope="session", autouse=True)
def _session_artifacts() -> Iterator[Path]:
    yield SESSION_ARTIFACTS
    shutil.rmtree(SESSION_ARTIFACTS, ignore_errors=True)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """MariaDB's ``test`` database; tests name their tables uniquely and drop them."""
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test").close()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable at {MYSQL_TEST_URL} ({exc}); run `make services`")
    return MYSQL_TEST_URL


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"figway_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); run `make services`")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = create_database_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_gateway(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway in this process on the session's PostgreSQL, access control on: one per
    module that asks. Not one per session: ``database_url`` empties that database's
    tables between modules (keys, rules and runs), under a gateway that would outlive it."""
    with production_gateway(pg_url, tmp_path_factory.mktemp("pg-gateway")) as running:
        yield running


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The tests' Redis database (``FIGWAY_TEST_REDIS_URL``), empty before and after."""
    with flushed_redis() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'figway.db'}"
        engine = create_database_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("pg_url")
    engine = create_database_engine(url)
    empty_tables(engine)
    yield url
    empty_tables(engine)
    engine.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = create_database_engine(database_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """For running `figway` in-process: no FIGWAY_* variable or .env file is seen, the
    working directory is an empty one (returned), and the data dir is ``tmp_path/data``."""
    for name in list(os.environ):
        if name.upper().startswith("FIGWAY_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FIGWAY_DATA_DIR", str(tmp_path / "data"))
    return workdir


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test that ran a production-shaped ``stack`` shows its processes' logs."""
    report = yield
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        report.sections.append(("figway process logs", running.logs()))
    return report
