"""Issue 16's "tried" list, each bullet through `figway serve` on PostgreSQL with access
control on, where the other tests of it ran on the embedded default or in-process.

Where each bullet of "tried" is answered (PG+on: a real gateway on PostgreSQL with
access control on; "here" is this module):

| bullet                                   | tests                                                    | PG+on |
|------------------------------------------|----------------------------------------------------------|-------|
| key as ?token= in the log, both ports    | test_exposure: key_in_a_websocket_url, ticket            | yes   |
| /docs, /redoc, /openapi.json open        | test_exposure: without_a_key, any_key_reads_the_docs     | yes   |
| /metrics open, lists workflow ids        | test_exposure: the same two                              | yes   |
| /readyz shows hosts and errors           | here: readyz_says_only_up_or_down                        | yes   |
| Redis URL alone: "production", no key    | unit/test_config; here: a_redis_url_alone                | SQLite by nature (no database URL) |
| a stray .env with FIGWAY_AUTH=off        | unit/test_config; here: banner_names_the_setting         | yes   |
| nothing logs that access control is off  | here: access_control_off_is_printed_and_warned           | PG, off by nature |
| definitions parsed on the event loop     | api/test_request_limits (embedded, in-process); here     | yes   |
| a 40 MB output kept in the database      | store/test_runtime (in-process); here, 1 MB over 256 KiB | yes   |
| a 5 MB cast error stored whole           | store/test_runtime (in-process); here                    | yes   |
| 3,000 WebSockets all accepted            | access/test_limits (embedded, on); here, 60 over 30/50   | yes   |
| 1,500 forged keys, each a lookup         | access/test_limits (embedded, on); here                  | yes   |
| a runs key reads and kills every space   | test_exposure: key_bound_to_a_workspace (list, read,     | yes   |
|                                          | logs, kill, start, follow)                               |       |
| depth-500 definition answers 500         | api/test_request_limits (SQLite and PG, off); here       | yes   |
| access log gone after a Prefect run      | test_exposure: a_401_after_an_in_process_prefect_run     | yes   |
| SQLite file and artifacts world-readable | store/test_store, nodes/test_artifacts (unit); here:     | artifacts yes; SQLite by nature |
|                                          | the stored output (PG), redis_url_alone (SQLite)         |       |
| artifact URIs expose server paths        | nodes/test_artifacts (unit); here: a_large_output        | yes   |
| no lock file; fakeredis in production    | unit/test_lock_files, deploy/test_compose (build files)  | n/a   |

Gateways here share the session's PostgreSQL and the tests' Redis database: replicas of
one deployment. None runs in-process: an embedded gateway's in-process RQ would take
up the runs these leave in Redis (``pg_gateway`` serves the modules that need one).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from backends.runtime.bounds import MAX_TEXT_CHARS
from backends.store.api_keys import NewKey
from tests.support.figway_stack import FIGWAY, Stack, clean_env
from tests.support.http_server import Server, serve
from tests.support.keys import (
    api_keys,
    bearer,
    check_forged_keys_run_out_of_their_address_allowance,
    one_key_per_scope,
)
from tests.support.processes import LoggedProcess, command_line, descendants, free_port
from tests.support.services import flushed_redis

pytestmark = pytest.mark.service

PER_KEY = 30
FOLLOWERS_MAX = 50
PUTS = 3
ADDRESS_RATE = 6  # a token every ten seconds: the forged-key test does not race refills
DEFINITION_CAPS = {
    "FIGWAY_MAX_QUERY_CHARS": "1100000",
    "FIGWAY_MAX_DEFINITION_BYTES": "1500000",
    "FIGWAY_MAX_BODY_BYTES": "2000000",
}


@pytest.fixture(scope="module")
def redis_db() -> Iterator[str]:
    with flushed_redis() as url:
        yield url


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    """An API on 127.0.0.2 for http_request nodes (the only host the stack lets them reach)."""
    with serve("127.0.0.2") as server:
        yield server


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`figway serve` and one RQ worker as production runs them: access control decided by
    the database URL (FIGWAY_AUTH unset), beside a stray .env that says off, and Prefect's
    API down, so /readyz has a failure it could give away."""
    log_dir = tmp_path_factory.mktemp("tried")
    (log_dir / ".env").write_text("FIGWAY_AUTH=off\n")  # the processes' working directory
    running = Stack(
        database_url=pg_url,
        redis_url=redis_db,
        log_dir=log_dir,
        settings={
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
            "FIGWAY_HTTP_ALLOW": "127.0.0.2",
            "FIGWAY_LIVE_FOLLOWERS_PER_KEY": str(PER_KEY),
            "FIGWAY_LIVE_FOLLOWERS_MAX": str(FOLLOWERS_MAX),
            **DEFINITION_CAPS,
        },
        unset=("FIGWAY_AUTH",),
    )
    running.start_gateway()
    try:
        running.start_workers("tried-worker")
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, NewKey]:
    found = one_key_per_scope(stack.database_url, "runs", "workflows", name="tried")
    with api_keys(stack.database_url) as store:
        found["code"] = store.create(
            name="tried code", scopes=["workflows", "code"], created_by="t"
        )
    return found


def log_of(process: LoggedProcess | None) -> str:
    assert process is not None
    return process.log_path.read_text(errors="replace")


def put_workflow(stack: Stack, key: NewKey, workflow_id: str, nodes: dict[str, Any]) -> None:
    body = {"workspace_id": "ws", "folder_id": "f", "nodes": nodes}
    answer = stack.http.put(f"/workflows/{workflow_id}", json=body, headers=bearer(key))
    assert answer.status_code in (200, 201), answer.text


def start_run(stack: Stack, key: NewKey, workflow_id: str, job_run_id: str) -> None:
    body = {
        "workspace_id": "ws",
        "folder_id": "f",
        "job_id": "j",
        "workflow_id": workflow_id,
        "job_run_id": job_run_id,
    }
    answer = stack.http.post("/workflow_runs/", json=body, headers=bearer(key))
    assert answer.status_code == 201, answer.text


def ended_run(stack: Stack, key: NewKey, job_run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = stack.http.get(
            f"/workflow_runs/{job_run_id}", headers=bearer(key)
        ).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"{job_run_id} did not end: {run}\n{stack.logs()}"
        time.sleep(0.2)


# -- the security state: decided by one rule, said at start-up ------------------------------


def test_the_banner_names_the_setting_and_a_stray_dotenv_does_not_turn_keys_off(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    stack.wait_for_gateway()
    banner = log_of(stack.gateway)
    assert (
        "security:   access control API keys required (FIGWAY_DATABASE_URL is set "
        "(production); FIGWAY_AUTH=off in the environment turns it off)"
    ) in banner
    assert "(production: RQ workers run separately" in banner
    assert stack.http.get("/workflow_runs/stats").status_code == 401  # .env said off
    assert stack.http.get("/workflow_runs/stats", headers=bearer(keys["runs"])).status_code == 200


@contextmanager
def serving(
    log_dir: Path, settings: dict[str, str], unset: tuple[str, ...] = ()
) -> Iterator[tuple[LoggedProcess, str]]:
    """`figway serve` with ``settings``, without the tests' settings named in ``unset``:
    the process and its base URL, once it answers."""
    # No Prefect API started in the background: these gateways never send a run there.
    settings = {"FIGWAY_PREFECT_EARLY_START": "false", **settings}
    env = {name: value for name, value in clean_env(settings).items() if name not in unset}
    port = free_port()
    process = LoggedProcess.start(
        "gateway",
        [FIGWAY, "serve", "--port", str(port), "--ws-port", str(free_port())],
        env=env,
        log_dir=log_dir,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base_url, timeout=10) as http:
            while True:
                assert process.running(), f"`figway serve` exited:\n{process.tail()}"
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no answer in 60 s:\n{process.tail()}"
                time.sleep(0.1)
        yield process, base_url
    finally:
        process.stop()


def test_a_redis_url_alone_requires_keys_and_keeps_its_files_private(
    redis_db: str, tmp_path: Path
) -> None:
    # No database URL: SQLite in the data directory, by nature of this configuration.
    data_dir = tmp_path / "data"
    settings = {"FIGWAY_REDIS_URL": redis_db, "FIGWAY_DATA_DIR": str(data_dir)}
    unset = ("FIGWAY_AUTH", "FIGWAY_ARTIFACT_URL")  # artifacts in the data directory too
    with serving(tmp_path, settings, unset) as (process, base_url):
        answer = httpx.get(f"{base_url}/workflow_runs/stats", timeout=10)
        banner = log_of(process)
    assert answer.status_code == 401
    assert "production: RQ workers run separately" in banner
    assert "access control API keys required (FIGWAY_REDIS_URL is set (production)" in banner
    assert data_dir.stat().st_mode & 0o777 == 0o700
    made = sorted(data_dir.glob("figway.db*"))  # the file, and SQLite's -wal and -shm
    assert made
    assert {path.name: path.stat().st_mode & 0o777 for path in made} == {
        path.name: 0o600 for path in made
    }
    assert (data_dir / "artifacts").stat().st_mode & 0o777 == 0o700


def test_access_control_off_in_production_is_printed_and_warned_at_every_start(
    pg_url: str, redis_db: str, tmp_path: Path
) -> None:
    settings = {"FIGWAY_DATABASE_URL": pg_url, "FIGWAY_REDIS_URL": redis_db, "FIGWAY_AUTH": "off"}
    with serving(tmp_path, settings) as (process, base_url):
        assert httpx.get(f"{base_url}/workflow_runs/stats", timeout=10).status_code == 200
        banner = log_of(process)
    assert "security:   access control OFF: no key is asked for (FIGWAY_AUTH=off)" in banner
    warnings = [line for line in banner.splitlines() if " WARNING " in line]
    assert any("access control is OFF" in line for line in warnings), banner


# -- /readyz: up or down, the details in the log ----------------------------------------------


def test_readyz_says_only_up_or_down_and_logs_why(stack: Stack) -> None:
    ready = stack.http.get("/readyz")
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert checks["prefect"] == {"up": False, "reason": "unreachable", "workers": None}
    assert checks["database"] == {"up": True}
    words = {"up", "reason", "workers", "startup", "state", "unreachable", "no_worker"}
    for check in checks.values():
        assert set(check) <= words
        assert all(
            isinstance(value, bool | int) or value is None or value in words
            for value in check.values()
        ), check
    prefect_url = stack.settings["PREFECT_API_URL"]
    assert prefect_url.split("//")[1].split("/")[0] not in ready.text
    assert "5432" not in ready.text
    assert "refused" not in ready.text
    # The cause is in the log, for the operator (written before the answer was sent).
    (why,) = [line for line in log_of(stack.gateway).splitlines() if "prefect is not ready" in line]
    assert " WARNING " in why
    assert "Connection refused" in why


# -- forged keys run out of their address's allowance before any lookup -------------------------


@pytest.fixture(scope="module")
def door(pg_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A replica whose client addresses may make ADDRESS_RATE requests a minute."""
    running = Stack(
        database_url=pg_url,
        redis_url=redis_db,
        log_dir=tmp_path_factory.mktemp("door"),
        settings={
            "FIGWAY_AUTH": "on",
            "FIGWAY_ADDRESS_RATE_LIMIT_PER_MINUTE": str(ADDRESS_RATE),
            "FIGWAY_PREFECT_EARLY_START": "false",
        },
    )
    running.start_gateway()
    try:
        running.wait_for_gateway()
        yield running
    finally:
        running.close()


def test_forged_keys_run_out_of_their_address_allowance_before_any_lookup(door: Stack) -> None:
    (good,) = one_key_per_scope(door.database_url, "runs", name="door").values()
    check_forged_keys_run_out_of_their_address_allowance(f"http://127.0.0.1:{door.port}", good)


# -- bounded storage -----------------------------------------------------------------------------


def test_a_large_output_goes_to_the_artifact_store_shown_relative_and_private(
    stack: Stack, keys: dict[str, NewKey], echo: Server
) -> None:
    echo.answer_json("/big", {"blob": "x" * 1_000_000})  # over the 256 KiB default
    put_workflow(
        stack, keys["workflows"], "tried-big", {"fetch": {"type": "http_request",
                                                          "config": {"url": echo.url("/big")}}}
    )  # fmt: skip
    start_run(stack, keys["runs"], "tried-big", "tried-big-1")
    run = ended_run(stack, keys["runs"], "tried-big-1")
    assert run["status"] == "succeeded", run
    view = stack.http.get("/workflow_runs/tried-big-1", headers=bearer(keys["runs"]))
    assert len(view.content) < 20_000  # a reference, not the megabyte
    stored = view.json()["nodes"]["fetch"]["output"]["stored_output"]
    assert stored["bytes"] > 1_000_000
    assert stored["uri"] == "runs/tried-big-1/fetch/attempt-1-output.json"
    store = Path(os.environ["FIGWAY_TEST_ARTIFACT_URL"])
    assert str(store) not in view.text
    assert (store / stored["uri"]).stat().st_mode & 0o777 == 0o600


def test_a_huge_error_and_log_line_are_cut_in_the_run_and_in_the_log(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    nodes = {
        # DuckDB quotes the whole 5 MB string it could not cast; the node keeps its start.
        "cast": {
            "type": "sql_transform",
            "config": {"query": "select cast(repeat('z', 5000000) as integer) as n"},
        },
        # An error and a printed line of 5 MB each: figway's own bound, marked.
        "shout": {
            "type": "python",
            "config": {"callable": "tests.support.hogs:shout", "kwargs": {"size": 5_000_000}},
        },
    }
    put_workflow(stack, keys["code"], "tried-cast", nodes)
    start_run(stack, keys["runs"], "tried-cast", "tried-cast-1")
    run = ended_run(stack, keys["runs"], "tried-cast-1")
    assert run["status"] == "failed", run
    cast, shout = run["nodes"]["cast"]["error"], run["nodes"]["shout"]["error"]
    assert "Could not convert string 'zzz" in cast
    assert "cannot cast zzz" in shout
    assert "[truncated by figway: 5,000,0" in shout  # characters, the first 16,384 kept
    assert max(len(cast), len(shout)) < MAX_TEXT_CHARS + 200
    logs = stack.http.get("/workflow_runs/tried-cast-1/logs", headers=bearer(keys["runs"]))
    lines = logs.json()["lines"]
    assert any("y" * 100 in line["message"] and "truncated by figway" in line["message"]
               for line in lines), lines  # fmt: skip
    assert max(len(line["message"]) for line in lines) < MAX_TEXT_CHARS + 200


# -- requests -------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


def test_a_definition_or_run_nested_500_deep_is_a_422(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    definition = b'{"workspace_id": "ws", "folder_id": "f", "nodes": ' + nested(500) + b"}"
    run = b'{"workspace_id": "ws", "folder_id": "f", "parameters": ' + nested(500) + b"}"
    for method, path, body, key in (
        ("PUT", "/workflows/tried-deep", definition, keys["workflows"]),
        ("POST", "/workflow_runs/", run, keys["runs"]),
    ):
        answer = stack.http.request(
            method, path, content=body, headers={**bearer(key), "content-type": "application/json"}
        )
        assert answer.status_code == 422, answer.text
        assert "levels deep" in answer.json()["detail"]
    assert stack.http.get("/healthz").status_code == 200


def transforms(nodes: int, query_chars: int) -> dict[str, Any]:
    """``nodes`` sql_transform nodes, each with a query of about ``query_chars`` characters
    (that DuckDB parses, holding Python's GIL for about a second per megabyte)."""
    columns = max(1, query_chars // 22)
    query = "select " + ", ".join(f"a{i} + {i} as c{i}" for i in range(columns)) + " from t"
    nodes_ = {f"n{i}": {"type": "sql_transform", "config": {"query": query}} for i in range(nodes)}
    return {"workspace_id": "ws", "folder_id": "f", "nodes": nodes_}


def parsing_cpu_ticks(gateway_pid: int) -> int:
    """CPU time so far of the gateway's definition-checking processes (spawned children)."""
    ticks = 0
    for pid in descendants(gateway_pid):
        if "spawn_main" not in command_line(pid):
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def test_health_is_answered_while_1mb_definitions_are_being_put(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    """Ordering, not timing: once the gateway's checking processes are at work, five
    health checks in a row come back before the first PUT does. Parsed on the event loop,
    they would wait behind the parses and the first PUT's answer would overtake them.
    Three, one more than the checking processes: ten are tried on the embedded default
    (tests/api/test_request_limits.py), and cost this slower stack a minute."""
    assert stack.gateway is not None
    encoded = [json.dumps(transforms(25, 42_000)).encode() for _ in range(PUTS)]
    assert all(900_000 < len(raw) < 1_500_000 for raw in encoded)
    before = parsing_cpu_ticks(stack.gateway.pid)
    events: list[str] = []
    lock = threading.Lock()

    def put(index: int) -> int:
        with httpx.Client(base_url=str(stack.http.base_url), timeout=300) as http:
            answer = http.put(
                f"/workflows/tried-parse-{index}",
                content=encoded[index],
                headers={**bearer(keys["workflows"]), "content-type": "application/json"},
            )
        with lock:
            events.append(f"put {answer.status_code}")
        return answer.status_code

    with ThreadPoolExecutor(max_workers=PUTS) as pool:
        puts = [pool.submit(put, index) for index in range(PUTS)]
        deadline = time.monotonic() + 120
        # Ten ticks (a tenth of a second) of checking: a definition is being parsed.
        while parsing_cpu_ticks(stack.gateway.pid) < before + 10:
            assert time.monotonic() < deadline, "no definition was ever checked"
            time.sleep(0.01)
        for _ in range(5):
            assert stack.http.get("/healthz").status_code == 200
            with lock:
                events.append("health")
        codes = [future.result(timeout=300) for future in puts]
    assert codes == [201] * PUTS
    assert events[:5] == ["health"] * 5, events


# -- live followers -------------------------------------------------------------------------------


async def close_code(socket: websockets.ClientConnection) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(socket.recv(), timeout=30)
    except websockets.ConnectionClosed:
        return socket.close_code, socket.close_reason or ""


def test_live_followers_are_capped_per_key_and_per_gateway_on_both_ports_with_1013(
    stack: Stack, keys: dict[str, NewKey]
) -> None:
    """Sixty followers, over caps of 30 a key and 50 a gateway: what 3,000 were, in small."""
    other = one_key_per_scope(stack.database_url, "runs", name="tried other")["runs"]
    put_workflow(
        stack, keys["workflows"], "tried-nap", {"nap": {"type": "sleep", "config": {"seconds": 60}}}
    )
    start_run(stack, keys["runs"], "tried-nap", "tried-nap-1")
    api = f"ws://127.0.0.1:{stack.port}/ws/workflow_runs/tried-nap-1"
    legacy = f"ws://127.0.0.1:{stack.ws_port}/tried-nap-1"

    async def scenario() -> tuple[list[tuple[int | None, str]], list[tuple[int | None, str]]]:
        async with AsyncExitStack() as open_sockets:

            async def follow(url: str, key: NewKey) -> tuple[int | None, str] | None:
                """None when the socket is following (its snapshot came), else its close."""
                socket = await open_sockets.enter_async_context(
                    websockets.connect(url, additional_headers=bearer(key))
                )
                try:
                    first = await asyncio.wait_for(socket.recv(), timeout=30)
                except websockets.ConnectionClosed:
                    return socket.close_code, socket.close_reason or ""
                assert "snapshot" in str(first)
                return None

            # One at a time: which ones are refused does not depend on the order they land.
            mine = [await follow(api, keys["runs"]) for _ in range(PER_KEY + 5)]
            theirs = [await follow(legacy, other) for _ in range(25)]
        return [c for c in mine if c is not None], [c for c in theirs if c is not None]

    try:
        mine, theirs = asyncio.run(scenario())
        assert len(mine) == 5, mine
        assert {code for code, _ in mine} == {1013}
        assert all(keys["runs"].key.key_id in reason for _, reason in mine), mine
        assert len(theirs) == 5, theirs  # 30 + 20 = 50 followers in all, on both ports
        assert {code for code, _ in theirs} == {1013}
        assert all(f"{FOLLOWERS_MAX} live followers" in reason for _, reason in theirs), theirs

        async def again() -> str:
            async with websockets.connect(api, additional_headers=bearer(keys["runs"])) as socket:
                return str(await asyncio.wait_for(socket.recv(), timeout=30))

        assert "snapshot" in asyncio.run(again())  # places are given back when clients leave
    finally:
        stack.http.delete("/workflow_runs/tried-nap-1", headers=bearer(keys["runs"]))
