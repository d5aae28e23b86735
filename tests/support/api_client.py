"""Helpers for the API tests: unique ids, defining workflows, starting and awaiting runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import psycopg.sql
import pytest

from backends.nodes import NodeContext
from gateway.config import Settings

__all__ = [
    "EMBEDDED_WORKERS",
    "HEARTBEAT_SECONDS",
    "TERMINAL",
    "Gateway",
    "assert_started_once",
    "define",
    "definition",
    "error_fields",
    "get_run",
    "load_row",
    "run_body",
    "start",
    "unique",
    "wait_for",
    "wait_for_run",
]

#: Settings of the test gateway that tests reason about.
EMBEDDED_WORKERS = 4
HEARTBEAT_SECONDS = 0.2


@dataclass
class Gateway:
    """The gateway under test: where it listens and the settings it runs with."""

    base_url: str
    settings: Settings


TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
#: Generous: the first in-process Prefect run of a session starts Prefect's API, which
#: migrates its database (about 20 s on a quiet machine, much longer on a busy one).
DEADLINE_SECONDS = 120.0


def assert_started_once(responses: list[httpx.Response]) -> None:
    """Identical POSTs made one run: one 201; each repeat a 200 (the run is with its
    backend) or a 202 (another request is still submitting it, so it reads pending)."""
    shown = [(r.status_code, r.text) for r in responses]
    assert sorted(r.status_code for r in responses).count(201) == 1, shown
    for response in responses:
        assert response.status_code in (200, 201, 202), shown
        pending = response.json()["status"] == "pending"
        if response.status_code != 201:
            assert pending == (response.status_code == 202), shown


def unique(prefix: str) -> str:
    """An id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def definition(
    workflow_id: str,
    nodes: dict[str, Any],
    dependencies: dict[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "workspace_id": "ws1",
        "folder_id": "folder1",
        "nodes": nodes,
        "dependencies": dependencies or {},
        **extra,
    }


def define(
    client: httpx.Client,
    nodes: dict[str, Any],
    dependencies: dict[str, list[str]] | None = None,
    *,
    prefix: str = "wf",
) -> str:
    """PUT a new workflow of these nodes; returns its (unique) id."""
    workflow_id = unique(prefix)
    response = client.put(
        f"/workflows/{workflow_id}", json=definition(workflow_id, nodes, dependencies)
    )
    assert response.status_code == 201, response.text
    return workflow_id


def run_body(workflow_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "workspace_id": "ws1",
        "folder_id": "folder1",
        "job_id": "job1",
        "workflow_id": workflow_id,
        **fields,
    }


def start(client: httpx.Client, workflow_id: str, **fields: Any) -> dict[str, Any]:
    """POST a new run and return its body."""
    response = client.post("/workflow_runs/", json=run_body(workflow_id, **fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(
    probe: Callable[[], Any],
    done: Callable[[Any], bool],
    what: str,
    timeout: float = DEADLINE_SECONDS,
) -> Any:
    """Call ``probe`` until ``done(result)``; fail naming ``what`` and the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s; last seen: {result!r}")
        time.sleep(0.1)


def get_run(client: httpx.Client, job_run_id: str) -> dict[str, Any]:
    response = client.get(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_run(
    client: httpx.Client, job_run_id: str, statuses: frozenset[str] = TERMINAL
) -> dict[str, Any]:
    """The run once its status is one of ``statuses`` (by default: finished)."""
    run: dict[str, Any] = wait_for(
        lambda: get_run(client, job_run_id),
        lambda run: run["status"] in statuses,
        f"run {job_run_id} reaching {sorted(statuses)}",
    )
    return run


def error_fields(response: httpx.Response) -> set[str]:
    """The ``errors[].field`` names of a 4xx body."""
    body = response.json()
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    return {error["field"] for error in body["errors"]}


def load_row(dsn: str, table: str, value: str, context: NodeContext) -> dict[str, Any]:
    """A load node for the shadow tests: inserts one row, except in a shadow (sandboxed) run.

    It returns the same output either way, as a sandboxed load should: the
    comparison checks what it would have written, the table what it did write.
    """
    if not context.sandboxed:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(
                psycopg.sql.SQL("INSERT INTO {} (value) VALUES (%s)").format(
                    psycopg.sql.Identifier(table)
                ),
                (value,),
            )
    return {"rows": 1, "value": value}
