"""The ``figway`` command, through click's test runner, on a throwaway data directory."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from backends.store import Store, create_database_engine, ensure_migrated
from gateway.cli.main import main
from tests.support.processes import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
PG_ADMIN_URL = os.environ.get(
    "FIGWAY_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

GOOD = """
workflow_id: good_one
workspace_id: ws1
folder_id: f1
nodes:
  a: {type: noop}
"""

BAD = """
workflow_id: bad_one
workspace_id: ws1
folder_id: f1
nodes:
  teleporter: {type: teleport}
  napper: {type: sleep, config: {}}
"""


@pytest.fixture
def data_dir(cli_env: Path, tmp_path: Path) -> Path:
    """Only FIGWAY_DATA_DIR is set; no other FIGWAY_* variable or .env file is seen."""
    return tmp_path / "data"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`figway serve` configures the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def figway(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


EXAMPLE_IDS = ("hello", "always_fails", "sales_daily", "sales_etl")


def stored_workflow_ids(data_dir: Path) -> set[str]:
    engine = create_database_engine(f"sqlite:///{data_dir / 'figway.db'}")
    try:
        ensure_migrated(engine, auto_migrate=True)
        store = Store(engine)
        return {
            workflow_id
            for workflow_id in (*EXAMPLE_IDS, "good_one", "bad_one")
            if store.get_workflow(workflow_id=workflow_id) is not None
        }
    finally:
        engine.dispose()


def test_load_stores_the_example_workflows(data_dir: Path) -> None:
    result = figway("workflows", "load", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    for name in EXAMPLE_IDS:
        assert f"{name} created" in result.stdout
    assert stored_workflow_ids(data_dir) == set(EXAMPLE_IDS)

    again = figway("workflows", "load", str(EXAMPLES / "hello.yaml"))
    assert again.exit_code == 0, again.output
    assert "hello version 1" in again.stdout  # unchanged: not a new version


def test_load_reports_each_problem_of_a_bad_file_and_fails(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD)
    (folder / "bad.yaml").write_text(BAD)

    result = figway("workflows", "load", str(folder))
    assert result.exit_code != 0
    assert f"{folder / 'bad.yaml'}: refused" in result.stderr
    assert "nodes.teleporter.type" in result.stderr
    assert "teleport" in result.stderr
    assert "nodes.napper.config.seconds" in result.stderr
    assert "1 of 2 definition(s) refused" in result.stderr
    assert stored_workflow_ids(data_dir) == {"good_one"}


@pytest.mark.parametrize(
    ("name", "text", "complaint"),
    [
        ("list.yaml", "- just\n- a list\n", "mapping"),
        ("broken.json", "{not json", "cannot read"),
        pytest.param(
            "broken.yaml",
            "nodes: [unclosed\n",
            "cannot read",
        ),
    ],
    ids=["not-a-mapping", "bad-json", "bad-yaml"],
)
def test_load_reports_unreadable_files(
    data_dir: Path, tmp_path: Path, name: str, text: str, complaint: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = figway("workflows", "load", str(path))
    assert result.exit_code != 0
    assert str(path) in result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.output


def test_load_check_validates_and_stores_nothing(data_dir: Path, tmp_path: Path) -> None:
    result = figway("workflows", "load", "--check", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert "ok (hello)" in result.stdout
    assert stored_workflow_ids(data_dir) == set()

    (tmp_path / "bad.yaml").write_text(BAD)
    refused = figway("workflows", "load", "--check", str(tmp_path / "bad.yaml"))
    assert refused.exit_code != 0
    assert "nodes.teleporter.type" in refused.stderr


def test_load_of_a_folder_without_definitions_fails(data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = figway("workflows", "load", str(empty))
    assert result.exit_code != 0
    assert "no .yaml, .yml, .json files" in result.stderr


def test_worker_rq_needs_a_redis_url(data_dir: Path) -> None:
    result = figway("worker", "rq", "--burst")
    assert result.exit_code != 0
    assert "FIGWAY_REDIS_URL" in result.stderr


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command below ``group``, as a user would type it (lazy groups included)."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_the_command_tree_has_the_documented_commands() -> None:
    assert set(all_commands(main)) >= {
        ("serve",),
        ("worker",),
        ("worker", "rq"),
        ("db",),
        ("db", "upgrade"),
        ("workflows",),
        ("workflows", "load"),
        ("runs",),
        ("runs", "watch"),
    }


@pytest.mark.parametrize(
    "command", [(), *all_commands(main)], ids=lambda command: " ".join(("figway", *command))
)
def test_every_command_has_help(data_dir: Path, command: tuple[str, ...]) -> None:
    result = figway(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert " ".join(("main", *command)) in result.stdout.splitlines()[0]


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database with no schema at all."""
    name = f"figway_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.service
@pytest.mark.timeout(60)  # if the check were missing, serve would block here until this fires
@pytest.mark.usefixtures("restore_logging")
def test_serve_refuses_an_unmigrated_postgresql_database(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, empty_pg_url: str
) -> None:
    monkeypatch.setenv("FIGWAY_DATABASE_URL", empty_pg_url)
    result = figway("serve", "--port", str(free_port()), "--log-level", "warning")
    assert result.exit_code != 0
    assert "figway db upgrade" in result.stderr
    assert "Traceback" not in result.output

    upgraded = figway("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    engine = create_database_engine(empty_pg_url)
    try:
        ensure_migrated(engine, auto_migrate=False)  # raises if the schema is still behind
    finally:
        engine.dispose()


def test_setup_prefect_secrets_from_env_with_no_secret_says_what_to_export(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9: the command must stop before it tries the server.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    result = CliRunner().invoke(main, ["setup", "prefect", "--secrets-from-env"])
    assert result.exit_code == 1
    assert "found no FIGWAY_SECRET_<NAME> variable" in result.output
    assert "FIGWAY_SECRET_PG_SALES" in result.output


@pytest.mark.timeout(60)  # if the check were missing, serve would block here until this fires
@pytest.mark.usefixtures("restore_logging")
def test_serve_refuses_a_public_interface_with_access_control_off(data_dir: Path) -> None:
    result = figway("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.exit_code != 0
    assert "refusing to serve on 0.0.0.0 with access control off" in result.output
    assert "--insecure-no-auth" in result.output
