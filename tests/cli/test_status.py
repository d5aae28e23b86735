"""``figway status`` as a person runs it: a real ``figway`` process reading a real gateway
with runs on both backends, on the embedded default and on PostgreSQL with API keys."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.store import create_database_engine
from backends.store.api_keys import ApiKeys, NewKey
from tests.cli.test_runs_watch import cli_env
from tests.support.api_client import Gateway
from tests.support.figway_stack import FIGWAY
from tests.support.gateway import client_of, running_gateway
from tests.support.migration import MigrationRuns, run_on_both_backends, write_rules

TIMEOUT = 120


def status(
    gateway: Gateway, *options: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    settings = {"FIGWAY_URL": gateway.base_url} | ({"FIGWAY_API_KEY": key} if key else {})
    return subprocess.run(
        [FIGWAY, "status", *options],
        env=cli_env(settings) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def check_document(document: dict[str, Any], made: MigrationRuns) -> None:
    """What ``--json`` must say about the runs ``made``."""
    assert document["phase"] == 2
    assert document["default"] == "rq"
    rules = {rule["id"]: rule for rule in document["rules"]}
    assert rules["to-prefect"]["share"] == {"prefect": 100.0}
    assert rules["shadowed"]["shadow"] == "prefect"
    assert rules["stepped"]["share"] == {"prefect": 5.0, "rq": 95.0}
    assert rules["stepped"]["step"].startswith("5%"), rules["stepped"]
    assert rules["stepped"]["promotion"].startswith("running")
    assert rules["(default)"]["share"] == {"rq": 100.0}
    verdicts = {v["workflow_id"]: v for v in document["verdicts"]}
    compared = verdicts[made.compared]
    assert (compared["candidate_runs"], compared["baseline_runs"]) == (
        made.per_backend,
        made.per_backend,
    )
    assert compared["answer"] == "inconclusive"  # three runs a side decide nothing
    assert 0.5 < compared["confidence"] < 1
    assert any("failure rate" in line for line in compared["evidence"])
    assert document["in_flight"] == {}  # every run finished
    assert any(c["what"].startswith("rollout stepped started") for c in document["changes"])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, MigrationRuns]]:
    directory = tmp_path_factory.mktemp("status-embedded")
    with (
        running_gateway(directory, routing_rules=write_rules(directory)) as gateway,
        client_of(gateway) as client,
    ):
        yield gateway, run_on_both_backends(client, client)


def test_the_json_document_on_the_embedded_default(embedded: tuple[Gateway, MigrationRuns]) -> None:
    gateway, made = embedded
    done = status(gateway, "--json")
    assert done.returncode == 0, done.stderr
    check_document(json.loads(done.stdout), made)


def test_the_screen_shows_every_section(embedded: tuple[Gateway, MigrationRuns]) -> None:
    gateway, made = embedded
    done = status(gateway)
    assert done.returncode == 0, done.stderr
    screen = done.stdout
    for section in ("RULES", "VERDICTS", "IN FLIGHT", "LAST CHANGES"):
        assert section in screen, screen
    assert "phase 2" in screen
    assert "prefect 5%  rq 95%" in screen  # the stepped rule's shares
    assert made.compared in screen
    assert "inconclusive" in screen


def test_watch_refreshes_until_interrupted(embedded: tuple[Gateway, MigrationRuns]) -> None:
    gateway, _ = embedded
    watcher = subprocess.Popen(
        [FIGWAY, "status", "--watch", "--json", "--interval", "0.5"],
        env=cli_env({"FIGWAY_URL": gateway.base_url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first, second = watcher.stdout.readline(), watcher.stdout.readline()
    finally:
        watcher.kill()
        watcher.communicate(timeout=TIMEOUT)
    assert json.loads(first)["phase"] == json.loads(second)["phase"] == 2


@pytest.mark.service
def test_on_postgresql_an_admin_key_reads_it_and_others_are_told_why_not(
    pg_url: str, tmp_path: Path
) -> None:
    with running_gateway(
        tmp_path, database_url=pg_url, auth="on", routing_rules=write_rules(tmp_path)
    ) as gateway:
        engine = create_database_engine(gateway.settings.resolved_database_url())
        keys: dict[str, NewKey] = {
            scope: ApiKeys(engine).create(name=f"status {scope}", scopes=scopes, created_by="test")
            for scope, scopes in {
                "admin": ["admin"],
                "runs": ["runs"],
                "workflows": ["workflows"],
            }.items()
        }
        engine.dispose()

        def client(scope: str) -> httpx.Client:
            http = httpx.Client(base_url=gateway.base_url, timeout=30)
            http.headers["Authorization"] = f"Bearer {keys[scope].token}"
            return http

        with client("runs") as runs, client("admin") as admin, client("workflows") as definer:
            made = run_on_both_backends(runs, admin, definer=definer)
        done = status(gateway, "--json", key=keys["admin"].token)
        assert done.returncode == 0, done.stderr
        check_document(json.loads(done.stdout), made)

        refused = status(gateway, key=keys["runs"].token)
        assert refused.returncode == 1
        assert "403" in refused.stderr
        assert "admin" in refused.stderr  # the scope it lacks is named
        no_key = status(gateway)
        assert no_key.returncode == 1
        assert "401" in no_key.stderr


def test_an_unreachable_gateway_is_named() -> None:
    gateway = Gateway(base_url="http://127.0.0.1:9", settings=None)  # type: ignore[arg-type]
    done = status(gateway)
    assert done.returncode == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in done.stderr
