"""What one request may cost the gateway, and what it gets back when it asks too much: the
caps on a definition, parsing off the event loop, and bodies that are not requests."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.web.definition_checks import DefinitionChecker
from tests.support.api_client import Gateway, definition, unique
from tests.support.gateway import client_of, running_gateway

MAX_NODES = 40
MAX_QUERY_CHARS = 1_100_000
MAX_DEFINITION_BYTES = 1_500_000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("limits"),
        max_nodes=MAX_NODES,
        max_query_chars=MAX_QUERY_CHARS,
        max_definition_bytes=MAX_DEFINITION_BYTES,
        max_body_bytes=2_000_000,
    ) as running:
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with client_of(gateway) as http:
        yield http


def transforms(workflow_id: str, nodes: int, query_chars: int) -> dict[str, Any]:
    """A definition of ``nodes`` sql_transform nodes, each with a query of about
    ``query_chars`` characters (that DuckDB parses, which takes a while)."""
    columns = max(1, query_chars // 22)
    query = "select " + ", ".join(f"a{i} + {i} as c{i}" for i in range(columns)) + " from t"
    return definition(
        workflow_id,
        {f"n{i}": {"type": "sql_transform", "config": {"query": query}} for i in range(nodes)},
    )


# -- caps ----------------------------------------------------------------------------------


def test_too_many_nodes_is_a_422_naming_nodes(client: httpx.Client) -> None:
    workflow_id = unique("many")
    body = definition(workflow_id, {f"n{i}": {"type": "noop"} for i in range(MAX_NODES + 1)})
    refused = client.put(f"/workflows/{workflow_id}", json=body)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "nodes"
    assert f"may have {MAX_NODES}" in error["message"]


def test_too_much_query_text_is_a_422_naming_the_largest_nodes(client: httpx.Client) -> None:
    workflow_id = unique("wordy")
    body = transforms(workflow_id, 2, 600_000)
    assert len(json.dumps(body)) < MAX_DEFINITION_BYTES
    refused = client.put(f"/workflows/{workflow_id}", json=body)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "nodes"
    assert f"may hold {MAX_QUERY_CHARS}" in error["message"]
    assert "n0" in error["message"]


def test_a_definition_over_the_size_cap_is_a_413(client: httpx.Client) -> None:
    workflow_id = unique("huge")
    body = definition(workflow_id, {"a": {"type": "noop"}}, description="x" * 1_600_000)
    refused = client.put(f"/workflows/{workflow_id}", json=body)
    assert refused.status_code == 413, refused.text
    assert "FIGWAY_MAX_DEFINITION_BYTES" in refused.json()["detail"]


# -- work off the event loop ---------------------------------------------------------------


def test_health_is_answered_while_ten_1mb_definitions_are_being_put(
    gateway: Gateway, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordering, not timing: once the first definition is being parsed, five health
    checks in a row come back before the first PUT does.

    Each definition holds about 1 MB of queries, which DuckDB takes about a second to
    parse, holding the GIL. Parsed on the event loop (or in threads of the gateway's
    process), the health checks would wait behind the parses, and the first PUT's
    answer would overtake them.
    """
    parsing = threading.Event()
    hand_over = DefinitionChecker.parse

    async def watched_parse(self: DefinitionChecker, raw: Any) -> Any:
        parsing.set()  # the gateway runs in this process: this is where it hands a parse over
        return await hand_over(self, raw)

    monkeypatch.setattr(DefinitionChecker, "parse", watched_parse)
    bodies = [transforms(unique("big"), 25, 42_000) for _ in range(10)]
    encoded = [json.dumps(body).encode() for body in bodies]
    assert all(900_000 < len(raw) < MAX_DEFINITION_BYTES for raw in encoded)
    events: list[str] = []
    lock = threading.Lock()

    def put(index: int) -> int:
        with httpx.Client(base_url=gateway.base_url, timeout=300) as http:
            answer = http.put(
                f"/workflows/{bodies[index]['workflow_id']}",
                content=encoded[index],
                headers={"content-type": "application/json"},
            )
        with lock:
            events.append(f"put {answer.status_code}")
        return answer.status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        puts = [pool.submit(put, index) for index in range(10)]
        assert parsing.wait(timeout=120), "no definition was ever parsed"
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
            with lock:
                events.append("health")
        codes = [future.result(timeout=300) for future in puts]
    assert codes == [201] * 10
    assert events[:5] == ["health"] * 5, events


# -- input hygiene at the edge, on SQLite and on PostgreSQL ---------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)]
)
def edge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway on each database: PostgreSQL refuses NUL in text, SQLite stores it."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    with running_gateway(tmp_path_factory.mktemp(f"edge-{request.param}"), **overrides) as running:
        yield running


RUN = {"workspace_id": "ws", "folder_id": "f", "job_id": "j", "workflow_id": "w"}


def keep_alive_answers(
    gateway: Gateway, requests: list[tuple[str, str, bytes | None]]
) -> list[tuple[int, dict[str, Any]]]:
    """Every request on ONE connection, in turn: a dropped connection fails the test."""
    host, port = gateway.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    answers = []
    try:
        for method, path, body in requests:
            headers = {"content-type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read() or b"{}")))
            assert not response.will_close, f"{method} {path}: the gateway closed the connection"
    finally:
        connection.close()
    return answers


@pytest.mark.parametrize(
    "field", ["workspace_id", "folder_id", "job_id", "workflow_id", "from_job", "job_run_id"]
)
@pytest.mark.parametrize("character", ["\x00", "\n", "\x1b"])
def test_a_control_character_in_a_body_id_is_a_422_naming_it(
    edge: Gateway, field: str, character: str
) -> None:
    body = json.dumps({**RUN, field: f"a{character}b"}).encode()
    ((status, answer),) = keep_alive_answers(edge, [("POST", "/workflow_runs/", body)])
    assert status == 422, answer
    assert [error["field"] for error in answer["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/workflow_runs/a%00b", "job_run_id"),
        ("DELETE", "/workflow_runs/a%00b", "job_run_id"),
        ("GET", "/workflow_runs/a%0Ab/logs", "job_run_id"),
        ("GET", "/workflows/a%00b", "workflow_id"),
        ("PUT", "/workflows/a%00b", "workflow_id"),
        ("GET", "/routing/explain?workflow_id=a%00b", "workflow_id"),
        ("GET", "/routing/shadows/a%00b", "job_run_id"),
    ],
)
def test_a_control_character_in_a_path_or_query_id_is_a_422_on_a_kept_connection(
    edge: Gateway, method: str, path: str, field: str
) -> None:
    body = json.dumps(
        {"workspace_id": "ws", "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
    ).encode()
    answers = keep_alive_answers(
        edge, [(method, path, body if method == "PUT" else None), ("GET", "/healthz", None)]
    )
    (status, answer), (health, _) = answers
    assert status == 422, answer
    assert field in [error["field"] for error in answer["errors"]]
    assert "control character" in answer["detail"]
    assert health == 200


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"workspace_id": ', "not valid JSON"),
        (b'{"workspace_id": "\xff\xfe"}', "not UTF-8"),
        (b'{"parameters": {"n": 1' + b"0" * 5_000 + b"}}", "digits"),
        (b'{"parameters": ' + nested(70) + b"}", "levels deep"),
        (b'{"parameters": ' + nested(500) + b"}", "levels deep"),
        (b'{"parameters": ' + nested(100_000) + b"}", "levels deep"),
    ],
    ids=["truncated", "not-utf8", "huge-int", "depth-70", "depth-500", "depth-100000"],
)
@pytest.mark.parametrize("where", [("POST", "/workflow_runs/"), ("PUT", "/workflows/edge-w")])
def test_an_unparseable_body_is_a_422_saying_what_is_wrong(
    edge: Gateway, body: bytes, says: str, where: tuple[str, str]
) -> None:
    (status, answer), (health, _) = keep_alive_answers(
        edge, [(*where, body), ("GET", "/healthz", None)]
    )
    assert status == 422, answer
    assert says in answer["detail"]
    assert health == 200


def test_a_definition_nested_within_the_limit_is_stored_and_read_back(edge: Gateway) -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"k": deep}
    body = definition(unique("deep"), {"a": {"type": "noop"}}, description="")
    body["nodes"]["a"]["config"] = {}
    with client_of(edge) as http:
        put = http.put(f"/workflows/{body['workflow_id']}", json=body)
        assert put.status_code == 201, put.text
        http.put("/workflows/edge-w", json=definition("edge-w", {"a": {"type": "noop"}}))
        started = http.post(
            "/workflow_runs/", json={**RUN, "workflow_id": "edge-w", "parameters": {"deep": deep}}
        )
        assert started.status_code == 201, started.text


@pytest.mark.parametrize(
    ("path", "documented"),
    [
        ("/workflow_runs/some-run", {"GET", "DELETE"}),
        ("/workflow_runs/", {"POST"}),
        ("/workflows/some-workflow", {"GET", "PUT"}),
        ("/workflow_runs/stats", {"GET"}),
    ],
)
def test_options_lists_every_documented_method_in_allow(
    client: httpx.Client, path: str, documented: set[str]
) -> None:
    answer = client.options(path)
    assert answer.status_code == 405
    allowed = {method.strip() for method in answer.headers["allow"].split(",")}
    assert documented <= allowed
