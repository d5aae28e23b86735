"""What an unauthenticated or greedy client can see or exhaust, tried against `figway serve`
on PostgreSQL and Redis with access control on (issue 16): keys never reach the log, only
the health checks answer without a key, and the access log outlives Prefect's logging
set-up."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backends.store.api_keys import NewKey
from gateway.config import Settings
from gateway.web.app import create_app
from tests.support.figway_stack import Stack
from tests.support.keys import api_keys, one_key_per_scope
from tests.support.live import close_of
from tests.support.services import flushed_redis

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def stack(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("exposure")
    with flushed_redis() as redis_url:
        running = Stack(
            database_url=pg_url,
            redis_url=redis_url,
            log_dir=log_dir,
            settings={
                "FIGWAY_AUTH": "on",
                # Runs go to Prefect in-process (its ephemeral API), whose logging set-up
                # used to silence the access log.
                "FIGWAY_DEFAULT_BACKEND": "prefect",
                "PREFECT_HOME": str(log_dir / "prefect"),
            },
        )
        running.start_gateway()
        try:
            running.wait_for_gateway()
            yield running
        finally:
            running.close()


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, NewKey]:
    return one_key_per_scope(
        stack.database_url, "runs", "workflows", "admin", "metrics", name="exposure"
    )


def bearer(key: NewKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.token}"}


def gateway_log(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.log_path.read_text(errors="replace")


def wait_for_log(stack: Stack, text: str) -> str:
    """The gateway's log once it holds ``text`` (lines are written as requests end)."""
    deadline = time.monotonic() + 30
    while text not in (log := gateway_log(stack)):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log[-3000:]}"
        time.sleep(0.1)
    return log


# -- 1. logs never hold a key ------------------------------------------------------------------


def test_a_key_in_a_websocket_url_is_never_logged_on_either_port(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    token = keys["runs"].token
    for base in (
        f"ws://127.0.0.1:{stack.port}/ws/workflow_runs/",
        f"ws://127.0.0.1:{stack.ws_port}/",
    ):
        code, _ = asyncio.run(close_of(f"{base}no-such-run?token={token}"))
        assert code == 4404
    log = wait_for_log(stack, '"WebSocket /no-such-run?token=***" accepted, closed 4404')
    wait_for_log(stack, '"WebSocket /ws/workflow_runs/no-such-run?token=***"')
    assert token not in log
    assert token.split("_", 2)[2] not in log  # not even the secret part


def test_a_ticket_opens_one_websocket_once_and_is_never_logged(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    issued = stack.http.post("/live/tickets", headers=bearer(keys["runs"]))
    assert issued.status_code == 201, issued.text
    ticket = issued.json()["ticket"]
    assert issued.json()["expires_in_seconds"] > 0
    url = f"ws://127.0.0.1:{stack.ws_port}/no-such-run?ticket={ticket}"
    assert asyncio.run(close_of(url))[0] == 4404  # past the door: the run is unknown
    code, reason = asyncio.run(close_of(url))  # the same ticket again
    assert code == 4401
    assert "ticket" in reason
    assert ticket not in wait_for_log(stack, "?ticket=***")
    # A ticket is for a key that may follow runs.
    refused = stack.http.post("/live/tickets", headers=bearer(keys["admin"]))
    assert refused.status_code == 403


# -- 2. only the health checks answer without a key ------------------------------------------

OPEN = {"/healthz", "/readyz"}
DOCS = ("/openapi.json", "/docs", "/redoc")


def every_path() -> list[tuple[str, str]]:
    schema = create_app(Settings(_env_file=None)).openapi()
    found = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in schema["paths"].items()
        for method in operations
    ]
    return [*found, *(("GET", path) for path in DOCS)]


def test_without_a_key_only_the_health_checks_answer(stack: Stack) -> None:
    answers = {
        (method, path): stack.http.request(method, path).status_code
        for method, path in every_path()
    }
    assert {where: code for where, code in answers.items() if where[1] in OPEN} == {
        ("GET", "/healthz"): 200,
        ("GET", "/readyz"): 200,
    }
    opened = {
        where: code for where, code in answers.items() if where[1] not in OPEN and code != 401
    }
    assert opened == {}
    assert ("GET", "/metrics") in answers


def test_any_key_reads_the_docs_and_a_metrics_key_nothing_else(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    for path in (*DOCS, "/metrics"):
        answer = stack.http.get(path, headers=bearer(keys["metrics"]))
        assert answer.status_code == 200, (path, answer.text)
    assert "figway_" in stack.http.get("/metrics", headers=bearer(keys["metrics"])).text
    for path in ("/workflow_runs/stats", "/routing/rules", "/workflows/x"):
        assert stack.http.get(path, headers=bearer(keys["metrics"])).status_code == 403


# -- 7. the access log outlives Prefect's logging set-up ---------------------------------------


def test_a_401_after_an_in_process_prefect_run_is_logged(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    http = stack.http
    workflow = {"workspace_id": "ws", "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
    put = http.put("/workflows/exposure-prefect", json=workflow, headers=bearer(keys["workflows"]))
    assert put.status_code in (200, 201), put.text
    body = {
        "workspace_id": "ws",
        "folder_id": "f",
        "job_id": "j",
        "workflow_id": "exposure-prefect",
        "job_run_id": "exposure-prefect-1",
    }
    started = http.post("/workflow_runs/", json=body, headers=bearer(keys["runs"]))
    assert started.status_code == 201, started.text
    assert started.json()["backend"] == "prefect"
    deadline = time.monotonic() + 180  # the first in-process run starts Prefect's API
    while True:
        run = http.get("/workflow_runs/exposure-prefect-1", headers=bearer(keys["runs"])).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"the run did not finish: {run}\n{stack.logs()}"
        time.sleep(0.3)
    assert run["status"] == "succeeded", run
    for path in ("/workflow_runs/after-prefect", "/workflows/after-prefect"):
        assert http.get(path).status_code == 401
        wait_for_log(stack, f'"GET {path} HTTP/1.1" 401')
    refused = http.get("/routing/rules", headers=bearer(keys["runs"]))
    assert refused.status_code == 403
    wait_for_log(stack, '"GET /routing/rules HTTP/1.1" 403')


# -- 6. keys bound to workspaces -----------------------------------------------------------


def test_a_key_bound_to_a_workspace_sees_nothing_of_another(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    with api_keys(stack.database_url) as store:
        ws1_runs = store.create(
            name="ws1 runs", scopes=["runs"], created_by="test", workspaces=["ws1"]
        )
        ws1_writer = store.create(
            name="ws1 workflows", scopes=["workflows"], created_by="test", workspaces=["ws1"]
        )
    http = stack.http
    for workspace in ("ws1", "ws2"):
        workflow = {"workspace_id": workspace, "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
        put = http.put(
            f"/workflows/bound-{workspace}", json=workflow, headers=bearer(keys["workflows"])
        )
        assert put.status_code in (200, 201), put.text
        body = {
            "workspace_id": workspace,
            "folder_id": "f",
            "job_id": "j",
            "workflow_id": f"bound-{workspace}",
            "job_run_id": f"bound-{workspace}-1",
        }
        started = http.post("/workflow_runs/", json=body, headers=bearer(keys["runs"]))
        assert started.status_code in (200, 201), started.text

    def as_ws1(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        answer = http.request(method, path, headers=bearer(ws1_runs), **kwargs)
        return answer.status_code, answer.json()

    assert as_ws1("GET", "/workflow_runs/bound-ws1-1")[0] == 200
    for method, suffix in (("GET", ""), ("GET", "/logs"), ("DELETE", "")):
        foreign = as_ws1(method, f"/workflow_runs/bound-ws2-1{suffix}")
        missing = as_ws1(method, f"/workflow_runs/bound-none-1{suffix}")
        assert foreign[0] == 404
        assert foreign[1] == {
            **missing[1],
            "detail": missing[1]["detail"].replace("bound-none-1", "bound-ws2-1"),
        }
    stats = as_ws1("GET", "/workflow_runs/stats")[1]
    assert "bound-ws1" in stats["by_workflow"]
    assert "bound-ws2" not in stats["by_workflow"]
    # Starting another workspace's workflow: exactly what a workflow that does not exist gets.
    start = {"folder_id": "f", "job_id": "j", "job_run_id": "bound-x"}
    foreign = as_ws1(
        "POST", "/workflow_runs/", json={**start, "workspace_id": "ws2", "workflow_id": "bound-ws2"}
    )
    missing = as_ws1(
        "POST",
        "/workflow_runs/",
        json={**start, "workspace_id": "ws2", "workflow_id": "bound-nope"},
    )
    assert foreign[0] == missing[0] == 404
    assert foreign[1]["detail"] == missing[1]["detail"].replace("bound-nope", "bound-ws2")
    # Following another workspace's run: closed as an unknown run.
    base = f"ws://127.0.0.1:{stack.ws_port}/"
    foreign_close = asyncio.run(close_of(base + "bound-ws2-1", bearer(ws1_runs)))
    missing_close = asyncio.run(close_of(base + "bound-none-1", bearer(ws1_runs)))
    assert foreign_close[0] == missing_close[0] == 4404
    # Definitions: another workspace's workflow is not there; one cannot be put there.
    read = http.get("/workflows/bound-ws2", headers=bearer(ws1_writer))
    assert (read.status_code, read.json()["detail"]) == (404, "no workflow 'bound-ws2'")
    moved = {"workspace_id": "ws2", "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
    assert (
        http.put("/workflows/bound-ws1", json=moved, headers=bearer(ws1_writer)).status_code == 403
    )
    taken = {"workspace_id": "ws1", "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
    assert (
        http.put("/workflows/bound-ws2", json=taken, headers=bearer(ws1_writer)).status_code == 403
    )
    assert http.get("/workflows/bound-ws1", headers=bearer(ws1_writer)).status_code == 200
