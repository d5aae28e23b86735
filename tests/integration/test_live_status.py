"""Live status over WebSocket, as clients use it: two gateway processes on one PostgreSQL,
runs on real RQ workers and on a real Prefect worker, followed from the other gateway.

The client that follows a run is connected to gateway B, which neither accepted the
run nor runs any worker: what it sends comes from the journal that the workers of
both backends write, through PostgreSQL's notifications. Every message after the
snapshot must be the journal's next row, in order, to the end of the run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import websockets

from tests.support.prefect_services import PrefectServices
from tests.support.prefect_stack import PrefectStack, prefect_stack
from tests.support.services import flushed_redis

pytestmark = pytest.mark.service

RUN_TIMEOUT = 120.0

NODES = {
    "flaky": {"type": "fail", "config": {"times": 1}, "retries": 1},
    "nap": {"type": "sleep", "config": {"seconds": 0.5}},
    "after": {"type": "noop"},
}
DEPENDENCIES = {"after": ["flaky", "nap"]}


@pytest.fixture(scope="module")
def gateways(
    upgraded_pg_url: str,
    prefect_services: PrefectServices,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrefectStack, PrefectStack]]:
    """Gateway A (with an RQ worker) and gateway B (nothing but the API), one database."""
    with (
        flushed_redis() as redis_url,
        prefect_stack(
            database_url=upgraded_pg_url,
            redis_url=redis_url,
            log_dir=tmp_path_factory.mktemp("live"),
            services=prefect_services,
        ) as first,
    ):
        first.start_workers("live-rq")
        second = PrefectStack(
            database_url=upgraded_pg_url,
            redis_url=redis_url,
            log_dir=tmp_path_factory.mktemp("live-b"),
            settings=dict(first.settings),
            prefect=prefect_services,
        )
        second.start_gateway()
        try:
            second.wait_for_gateway()
            yield first, second
        finally:
            second.close()


async def follow(url: str) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every message until the server closes; with the close code and reason."""
    messages = []
    async with websockets.connect(url, open_timeout=10) as socket:
        try:
            async with asyncio.timeout(RUN_TIMEOUT):
                async for text in socket:
                    messages.append(json.loads(text))
        except websockets.ConnectionClosed:
            pass
        code = socket.close_code
        reason = socket.close_reason or ""
    return messages, code, reason


def journal(pg_url: str, job_run_id: str) -> list[tuple[str | None, str, int]]:
    with psycopg.connect(pg_url) as connection:
        return [
            (node or None, status, attempt)
            for node, status, attempt in connection.execute(
                "SELECT node_id, status, attempt FROM transitions WHERE job_run_id = %s "
                "ORDER BY id",
                (job_run_id,),
            )
        ]


@pytest.mark.parametrize("backend", ["rq", "prefect"])
def test_a_client_of_another_gateway_follows_a_run_to_its_end(
    gateways: tuple[PrefectStack, PrefectStack], upgraded_pg_url: str, backend: str
) -> None:
    first, second = gateways
    workflow_id = f"live_{backend}"
    first.put_workflow(workflow_id, NODES, DEPENDENCIES, backend=backend, pool="default")
    job_run_id = f"live-{backend}-{uuid.uuid4().hex[:8]}"

    # The run must exist before the client connects, or it is refused as unknown.
    first.start_run(workflow_id, job_run_id)
    messages, code, reason = asyncio.run(follow(f"ws://127.0.0.1:{second.ws_port}/{job_run_id}"))
    context = first.explain(job_run_id)

    assert messages[0]["type"] == "snapshot", context
    assert messages[0]["run"]["job_run_id"] == job_run_id
    assert (code, reason) == (1000, "run succeeded"), (messages, context)
    updates = messages[1:]
    assert updates, f"no update after the snapshot: {messages}"
    assert updates[-1]["type"] == "run"
    assert updates[-1]["status"] == "succeeded"
    assert updates[-1]["terminal"] is True
    assert {m["backend"] for m in updates} == {backend}
    # In order and complete: what was sent is exactly the end of the run's journal.
    rows = journal(upgraded_pg_url, job_run_id)
    sent = [(m["node_id"], m["status"], m["attempt"]) for m in updates]
    assert sent == rows[len(rows) - len(sent) :], (sent, rows)
    # The retry is there, as it happened.
    assert ("flaky", "retrying", 1) in rows


def test_the_api_port_path_serves_the_same_messages(
    gateways: tuple[PrefectStack, PrefectStack],
) -> None:
    first, second = gateways
    first.put_workflow("live_api_path", {"only": {"type": "noop"}}, {}, backend="rq")
    job_run_id = f"live-api-{uuid.uuid4().hex[:8]}"
    first.start_run("live_api_path", job_run_id)
    messages, code, reason = asyncio.run(
        follow(f"ws://127.0.0.1:{second.port}/ws/workflow_runs/{job_run_id}")
    )
    assert messages[0]["type"] == "snapshot"
    assert (code, reason) == (1000, "run succeeded")
    assert messages[-1]["status"] == "succeeded"


def test_an_unknown_run_is_refused_with_a_close_code(
    gateways: tuple[PrefectStack, PrefectStack],
) -> None:
    _, second = gateways
    messages, code, reason = asyncio.run(follow(f"ws://127.0.0.1:{second.ws_port}/no-such-run"))
    assert (messages, code) == ([], 4404)
    assert "no-such-run" in reason


# What the old clients' guide has them write, run by Node.js's own WebSocket class.
LEGACY_CLIENT = """
const ws = new WebSocket(process.argv[process.argv.length - 1]);
ws.onmessage = (event) => {
  const update = JSON.parse(event.data);
  console.log(JSON.stringify(update));
};
ws.onclose = (event) => {
  console.log(JSON.stringify({closed: event.code, reason: event.reason}));
};
ws.onerror = (event) => { console.error("error", event.message); };
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_javascript_snippet_old_clients_use_follows_a_run(
    gateways: tuple[PrefectStack, PrefectStack],
) -> None:
    first, second = gateways
    first.put_workflow("live_js", NODES, DEPENDENCIES, backend="rq")
    job_run_id = f"live-js-{uuid.uuid4().hex[:8]}"
    first.start_run("live_js", job_run_id)
    result = subprocess.run(
        # Node 20 has the browser's WebSocket class behind this flag (it is on by default
        # from Node 22).
        [
            "node",
            "--experimental-websocket",
            "-e",
            LEGACY_CLIENT,
            "--",
            f"ws://127.0.0.1:{second.ws_port}/{job_run_id}",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[0]["type"] == "snapshot"
    assert lines[-2]["terminal"] is True
    assert lines[-1] == {"closed": 1000, "reason": "run succeeded"}
