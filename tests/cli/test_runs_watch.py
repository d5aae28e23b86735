"""``figway runs watch`` as a person runs it: a real ``figway`` process following runs
through a real gateway's live feed, on PostgreSQL with API keys and on the embedded
default, until each run ends with the exit code that says how."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.store.api_keys import NewKey
from tests.support.api_client import Gateway, define, start, wait_for_run
from tests.support.figway_stack import FIGWAY
from tests.support.gateway import client_of, running_gateway
from tests.support.keys import api_keys

WATCH_TIMEOUT = 120

NODES = {"first": {"type": "noop"}, "second": {"type": "noop"}, "last": {"type": "noop"}}
DEPENDENCIES = {"last": ["first", "second"]}


def cli_env(settings: dict[str, str]) -> dict[str, str]:
    """The watcher's environment: no FIGWAY_* setting of its own but ``settings``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FIGWAY_")} | settings


def watch(
    gateway: Gateway, job_run_id: str, key: str | None = None, *options: str
) -> subprocess.CompletedProcess[str]:
    settings = {"FIGWAY_URL": gateway.base_url} | ({"FIGWAY_API_KEY": key} if key else {})
    return subprocess.run(
        [FIGWAY, "runs", "watch", job_run_id, *options],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=WATCH_TIMEOUT,
        check=False,
    )


def watch_in_background(gateway: Gateway, job_run_id: str, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FIGWAY, "runs", "watch", job_run_id],
        env=cli_env({"FIGWAY_URL": gateway.base_url, "FIGWAY_API_KEY": key}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def keys(pg_gateway: Gateway) -> dict[str, NewKey]:
    with api_keys(pg_gateway.settings.resolved_database_url()) as store:
        return {
            "runs": store.create(name="watch runs", scopes=["runs"], created_by="test"),
            "workflows": store.create(
                name="watch code", scopes=["workflows", "code"], created_by="test"
            ),
        }


@pytest.fixture
def client(pg_gateway: Gateway, keys: dict[str, NewKey]) -> Iterator[httpx.Client]:
    with client_of(pg_gateway) as http:
        http.headers["Authorization"] = f"Bearer {keys['runs'].token}"
        yield http


@pytest.fixture
def define_as_workflows_key(pg_gateway: Gateway, keys: dict[str, NewKey]) -> Iterator[httpx.Client]:
    with client_of(pg_gateway) as http:
        http.headers["Authorization"] = f"Bearer {keys['workflows'].token}"
        yield http


@pytest.mark.service
def test_a_run_that_succeeds_is_followed_to_its_end_and_exits_0(
    pg_gateway: Gateway,
    keys: dict[str, NewKey],
    client: httpx.Client,
    define_as_workflows_key: httpx.Client,
) -> None:
    workflow_id = define(define_as_workflows_key, NODES, DEPENDENCIES)
    run = start(client, workflow_id)
    done = watch(pg_gateway, run["job_run_id"], keys["runs"].token)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"run {run['job_run_id']} succeeded", done.stdout
    # Unless the run had ended before the watcher connected, the nodes' ends were seen.
    if len(lines) > 2:
        assert "node last succeeded" in lines
    assert wait_for_run(client, run["job_run_id"])["status"] == "succeeded"


@pytest.mark.service
def test_a_failed_run_exits_1_with_each_transition_and_the_skipped_nodes(
    pg_gateway: Gateway,
    keys: dict[str, NewKey],
    client: httpx.Client,
    define_as_workflows_key: httpx.Client,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "open"
    nodes = {
        "gate": {
            "type": "python",
            "config": {
                "callable": "tests.support.gates:wait_for_file",
                "kwargs": {"path": str(gate)},
            },
        },
        "broken": {"type": "fail"},
        "after": {"type": "noop"},
    }
    workflow_id = define(define_as_workflows_key, nodes, {"broken": ["gate"], "after": ["broken"]})
    run = start(client, workflow_id)
    watcher = watch_in_background(pg_gateway, run["job_run_id"], keys["runs"].token)
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the snapshot: the watcher is following the run
        assert first.startswith(f"run {run['job_run_id']} of {workflow_id} on "), first
        gate.touch()
        rest, stderr = watcher.communicate(timeout=WATCH_TIMEOUT)
    finally:
        watcher.kill()
    lines = rest.splitlines()
    assert watcher.returncode == 1, rest + stderr
    assert "node gate succeeded" in lines, rest
    assert "node broken running" in lines, rest
    assert "node broken failed: node failed on purpose" in lines, rest
    assert "node after skipped: upstream node 'broken' failed" in lines, rest
    assert lines.index("node broken running") < lines.index(
        "node broken failed: node failed on purpose"
    )
    assert lines[-1].startswith(f"run {run['job_run_id']} failed"), rest


@pytest.mark.service
def test_a_cancelled_run_exits_2(
    pg_gateway: Gateway,
    keys: dict[str, NewKey],
    client: httpx.Client,
    define_as_workflows_key: httpx.Client,
) -> None:
    workflow_id = define(
        define_as_workflows_key, {"nap": {"type": "sleep", "config": {"seconds": 60}}}
    )
    run = start(client, workflow_id)
    watcher = watch_in_background(pg_gateway, run["job_run_id"], keys["runs"].token)
    try:
        wait_for_run(client, run["job_run_id"], frozenset({"running"}))
        time.sleep(0.5)  # the watcher connected (it is followed either way: it ends below)
        assert client.delete(f"/workflow_runs/{run['job_run_id']}").status_code == 200
        stdout, stderr = watcher.communicate(timeout=WATCH_TIMEOUT)
    finally:
        watcher.kill()
    assert watcher.returncode == 2, stdout + stderr
    assert stdout.splitlines()[-1].startswith(f"run {run['job_run_id']} cancel")


@pytest.mark.service
def test_what_cannot_be_followed_exits_3_with_the_reason(
    pg_gateway: Gateway, keys: dict[str, NewKey], client: httpx.Client
) -> None:
    unknown = watch(pg_gateway, "no-such-run", keys["runs"].token)
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert "no run 'no-such-run'" in unknown.stderr

    no_key = watch(pg_gateway, "no-such-run")
    assert no_key.returncode == 3
    assert "an API key is required" in no_key.stderr

    wrong_scope = watch(pg_gateway, "no-such-run", keys["workflows"].token)
    assert wrong_scope.returncode == 3
    assert "runs" in wrong_scope.stderr  # the scope it lacks is named


def test_on_the_embedded_default_no_key_is_needed(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as gateway, client_of(gateway) as client:
        workflow_id = define(client, NODES, DEPENDENCIES)
        run = start(client, workflow_id)
        done = watch(gateway, run["job_run_id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"run {run['job_run_id']} succeeded"


def test_an_unreachable_gateway_is_reported_after_a_few_tries(tmp_path: Path) -> None:
    gateway = Gateway(base_url="http://127.0.0.1:9", settings=None)  # type: ignore[arg-type]
    done = watch(gateway, "any", None, "--reconnects", "1")
    assert done.returncode == 3
    assert "lost the gateway at ws://127.0.0.1:9/ws/workflow_runs/any" in done.stderr
    assert "reconnecting" in done.stderr
