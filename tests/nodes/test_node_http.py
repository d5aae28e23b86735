"""The http_request node against a real HTTP server on loopback: outputs, failures, secrets."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from backends.artifacts import ArtifactRef, ArtifactStore, fingerprint_file
from backends.model.errors import DefinitionError, SecretMissingError
from backends.model.workflow import parse_definition, shadow_refusal
from backends.nodes import NodeCancelledError, NodeContext, NodeFailedError, NodeRegistry
from backends.nodes.builtin import BUILTIN_NODE_TYPES
from backends.nodes.http import HTTP_REQUEST, HttpRequestConfig, run_http_request
from backends.nodes.policy import NodePolicy
from tests.support.http_server import Answer, Server, serve
from tests.support.processes import free_port

SECRET_TOKEN = "Bearer tok-5ecret-value"


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as running:
        yield running


# -- the node's side -----------------------------------------------------------------------


def make_context(tmp_path: Path, *, sandboxed: bool = False) -> NodeContext:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    return NodeContext(
        job_run_id="r",
        node_id="n",
        attempt=1,
        parameters={},
        upstream_outputs={},
        logger=logging.getLogger("figway.node.http_request"),
        sandboxed=sandboxed,
        artifacts=store.for_attempt(job_run_id="r", node_id="n", attempt=1, sandboxed=sandboxed),
        # The test servers listen on loopback, which the default policy refuses.
        policy=NodePolicy(http_allow=("127.0.0.1",)),
    )


@pytest.fixture
def context(tmp_path: Path) -> NodeContext:
    return make_context(tmp_path)


def config(**fields: Any) -> HttpRequestConfig:
    """A config as a definition gives it (so `side_effects` goes by its alias)."""
    return HttpRequestConfig.model_validate(fields)


def fails(node_config: HttpRequestConfig, context: NodeContext) -> str:
    """The message the node fails with."""
    with pytest.raises(NodeFailedError) as caught:
        run_http_request(node_config, context)
    return str(caught.value)


def parquet_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "artifacts").rglob("*.parquet*"))


# -- answers -------------------------------------------------------------------------------


def test_get_outputs_status_content_type_and_parsed_json(
    server: Server, context: NodeContext
) -> None:
    server.answer_json(
        "/v1/orders", {"orders": [1, 2]}, content_type="application/json; charset=utf-8"
    )
    output = run_http_request(
        config(
            method="get",
            url=server.url("/v1/orders?region=eu&limit=10"),
            query={"since": "2024-01-01", "limit": 5, "all": True},
        ),
        context,
    )
    assert output == {
        "status": 200,
        "headers": {"content-type": "application/json; charset=utf-8"},
        "json": {"orders": [1, 2]},
    }
    [seen] = server.seen
    assert seen.method == "GET"
    # The URL's own query is kept; a name given in both takes the value from `query`.
    assert seen.path == "/v1/orders?region=eu&limit=5&since=2024-01-01&all=true"


def test_a_problem_json_content_type_is_parsed_too(server: Server, context: NodeContext) -> None:
    server.answer_json("/p", {"title": "ok"}, content_type="application/problem+json")
    output = run_http_request(config(url=server.url("/p")), context)
    assert output == {
        "status": 200,
        "headers": {"content-type": "application/problem+json"},
        "json": {"title": "ok"},
    }


def test_a_text_answer_is_decoded_with_its_charset(server: Server, context: NodeContext) -> None:
    server.answers["/hello"] = Answer(
        body="café crème".encode("latin-1"), content_type="text/plain; charset=latin-1"
    )
    output = run_http_request(config(url=server.url("/hello")), context)
    assert output == {
        "status": 200,
        "headers": {"content-type": "text/plain; charset=latin-1"},
        "text": "café crème",
    }


def test_an_answer_without_content_type_is_text(server: Server, context: NodeContext) -> None:
    server.answers["/raw"] = Answer(body=b'{"looks": "like json"}', content_type=None)
    output = run_http_request(config(url=server.url("/raw")), context)
    assert output == {
        "status": 200,
        "headers": {"content-type": None},
        "text": '{"looks": "like json"}',
    }


def test_a_head_answer_has_no_body_whatever_length_it_announces(
    server: Server, context: NodeContext
) -> None:
    server.answers["/big"] = Answer(body=b"x" * 5_000)  # HEAD gets only Content-Length: 5000
    output = run_http_request(
        config(method="HEAD", url=server.url("/big"), max_response_bytes=1_000), context
    )
    assert output == {"status": 200, "headers": {"content-type": "application/json"}, "json": None}


def test_post_sends_its_json_body(server: Server, context: NodeContext) -> None:
    server.answers["/orders"] = Answer(status=201, body=b'{"id": 7}')
    output = run_http_request(
        config(method="POST", url=server.url("/orders"), json_body={"item": "tea", "n": 2}),
        context,
    )
    assert output == {
        "status": 201,
        "headers": {"content-type": "application/json"},
        "json": {"id": 7},
    }
    [seen] = server.seen
    assert (seen.method, json.loads(seen.body)) == ("POST", {"item": "tea", "n": 2})
    assert seen.headers["content-type"] == "application/json"


def test_put_sends_its_text_body_as_is(server: Server, context: NodeContext) -> None:
    server.answers["/note"] = Answer(status=204, content_type=None)
    output = run_http_request(
        config(
            method="put",
            url=server.url("/note"),
            body="line one\nligne deux é",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        ),
        context,
    )
    assert output == {"status": 204, "headers": {"content-type": None}, "text": ""}
    [seen] = server.seen
    assert seen.body == "line one\nligne deux é".encode()
    assert seen.headers["content-type"] == "text/plain; charset=utf-8"


def test_an_expected_non_2xx_status_succeeds(server: Server, context: NodeContext) -> None:
    server.answers["/gone"] = Answer(status=404, body=b"[]")
    output = run_http_request(config(url=server.url("/gone"), expected_status=[404, 410]), context)
    assert output == {"status": 404, "headers": {"content-type": "application/json"}, "json": []}


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_text"),
    [
        (503, None, "expected 2xx"),
        (200, 201, "expected 201"),
        (204, [200, 201], "expected 200 or 201"),
    ],
)
def test_an_unexpected_status_fails_naming_method_url_and_status(
    server: Server,
    context: NodeContext,
    status: int,
    expected_status: int | list[int] | None,
    expected_text: str,
) -> None:
    server.answers["/v1/orders"] = Answer(
        status=status, body=b"upstream\n  is down", content_type="text/plain"
    )
    message = fails(
        config(
            url=server.url("/v1/orders?cursor=opaque-cursor#frag"),
            expected_status=expected_status,
        ),
        context,
    )
    assert message.startswith(
        f"GET {server.url('/v1/orders')} answered {status}, {expected_text}"
    ), message
    assert "opaque-cursor" not in message
    assert "frag" not in message
    if status != 204:  # a 204 has no body to quote
        assert message.endswith("the answer began: upstream is down")


def test_a_redirected_get_is_followed(server: Server, context: NodeContext) -> None:
    server.answers["/old"] = Answer(status=301, headers={"Location": "/new"}, content_type=None)
    server.answer_json("/new", {"moved": True})
    output = run_http_request(config(url=server.url("/old")), context)
    assert output == {
        "status": 200,
        "headers": {"content-type": "application/json"},
        "json": {"moved": True},
    }
    assert [seen.path for seen in server.seen] == ["/old", "/new"]


def test_a_redirected_post_is_not_followed(server: Server, context: NodeContext) -> None:
    server.answers["/old"] = Answer(status=307, headers={"Location": "/new"}, content_type=None)
    message = fails(config(method="POST", url=server.url("/old"), json_body=[1]), context)
    assert message.startswith(f"POST {server.url('/old')} answered 307, expected 2xx")
    assert [seen.path for seen in server.seen] == ["/old"]  # sent once, not re-sent to /new


# -- secrets -------------------------------------------------------------------------------


def test_a_secret_header_is_sent_and_never_output(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_API_TOKEN", SECRET_TOKEN)
    server.answer_json("/me", {"name": "etl"})
    output = run_http_request(
        config(url=server.url("/me"), headers={"Authorization": "secret:api-token"}), context
    )
    assert server.seen[0].headers["authorization"] == SECRET_TOKEN
    assert "tok-5ecret" not in json.dumps(output)


def test_a_secret_echoed_in_an_error_answer_is_not_in_the_message(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_API_TOKEN", SECRET_TOKEN)
    # Like an error page that quotes the request back.
    server.answers["/me"] = Answer(
        status=401, content_type="text/plain", echo_header="Authorization"
    )
    message = fails(
        config(url=server.url("/me"), headers={"Authorization": "secret:API_TOKEN"}), context
    )
    assert server.seen[0].headers["authorization"] == SECRET_TOKEN
    assert message.startswith(f"GET {server.url('/me')} answered 401, expected 2xx")
    assert "tok-5ecret" not in message
    assert "the answer began: ***" in message


def test_a_secret_url_is_named_by_its_reference_in_messages(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_ORDERS_URL", server.url("/hidden-tenant/orders"))
    server.answers["/hidden-tenant/orders"] = Answer(status=500, content_type=None)
    message = fails(config(url="secret:orders-url"), context)
    assert message == "GET secret:orders-url answered 500, expected 2xx"
    assert server.seen[0].path == "/hidden-tenant/orders"


def test_a_secret_url_that_is_not_http_fails_without_quoting_it(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_ORDERS_URL", "ftp://files.example.com/s3cr3t-path")
    message = fails(config(url="secret:orders-url"), context)
    assert message.startswith("the URL in secret:orders-url is unusable: use an http://")
    assert "s3cr3t" not in message


def test_a_missing_secret_fails_before_anything_is_sent(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIGWAY_SECRET_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SecretMissingError, match="FIGWAY_SECRET_NOT_SET_ANYWHERE"):
        run_http_request(
            config(url=server.url("/x"), headers={"X-Key": "secret:not-set-anywhere"}), context
        )
    assert server.seen == []


@pytest.mark.parametrize("reference", ["secret:api-key", "Secret:API_KEY"])
def test_secret_headers_do_not_follow_a_redirect_to_another_origin(
    server: Server, context: NodeContext, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_API_KEY", "k3y-for-the-first-host")
    with serve() as elsewhere:
        server.answers["/start"] = Answer(
            status=302, headers={"Location": elsewhere.url("/landing")}, content_type=None
        )
        elsewhere.answer_json("/landing", {"here": True})
        output = run_http_request(
            config(
                url=server.url("/start"),
                headers={"X-Api-Key": reference, "X-Plain": "visible"},
            ),
            context,
        )
        assert output == {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "json": {"here": True},
        }
        assert server.seen[0].headers["x-api-key"] == "k3y-for-the-first-host"
        [landed] = elsewhere.seen
        assert "x-api-key" not in landed.headers
        assert landed.headers["x-plain"] == "visible"


# -- tables --------------------------------------------------------------------------------


def test_as_table_writes_every_key_of_every_object_as_a_column(
    server: Server, context: NodeContext, tmp_path: Path
) -> None:
    rows = [
        {"id": 1, "name": "ada"},
        {"id": 2, "name": "bob", "vip": True},  # a key the first object lacks
        {"id": 3, "name": None},
    ]
    server.answer_json("/customers", rows)
    output = run_http_request(config(url=server.url("/customers"), as_table=True), context)

    reference = ArtifactRef.from_output(output)
    assert reference is not None
    assert reference.rows == 3
    assert reference.columns == (("id", "int64"), ("name", "string"), ("vip", "bool"))
    store = ArtifactStore(str(tmp_path / "artifacts"))
    path = store.local_path(reference)
    assert path is not None
    assert parquet_files(tmp_path) == [path]  # no partial file left beside it
    assert pq.read_table(path).to_pylist() == [
        {"id": 1, "name": "ada", "vip": None},
        {"id": 2, "name": "bob", "vip": True},
        {"id": 3, "name": None, "vip": None},
    ]
    connection = duckdb.connect()
    try:
        assert fingerprint_file(path, connection) == (3, reference.fingerprint)
    finally:
        connection.close()
    # The same rows in another order, written apart, fingerprint the same.
    shuffled = pa.Table.from_pylist(
        [
            {"id": 3, "name": None, "vip": None},
            {"id": 2, "name": "bob", "vip": True},
            {"id": 1, "name": "ada", "vip": None},
        ],
        schema=pq.read_schema(path),
    )
    other = ArtifactStore(str(tmp_path / "other")).for_attempt(
        job_run_id="r", node_id="n", attempt=1, sandboxed=False
    )
    with other.new_table(shuffled.schema) as writer:
        writer.write(shuffled.to_batches()[0])
        assert writer.finish().fingerprint == reference.fingerprint


def test_as_table_accepts_an_empty_array(
    server: Server, context: NodeContext, tmp_path: Path
) -> None:
    server.answer_json("/none", [])
    reference = ArtifactRef.from_output(
        run_http_request(config(url=server.url("/none"), as_table=True), context)
    )
    assert reference is not None
    assert (reference.rows, reference.columns) == (0, ())


@pytest.mark.parametrize(
    ("body", "content_type", "what"),
    [
        (b'{"customers": []}', "application/json", "answered a JSON object"),
        (b'"done"', "application/json", "answered a JSON string"),
        (b'[{"id": 1}, 2]', "application/json", "answered an array whose item 1 is a JSON number"),
        (b"<html>busy</html>", "text/html", "answered text/html that is not JSON"),
    ],
)
def test_as_table_refuses_what_is_not_an_array_of_objects(
    server: Server,
    context: NodeContext,
    tmp_path: Path,
    body: bytes,
    content_type: str,
    what: str,
) -> None:
    server.answers["/customers"] = Answer(body=body, content_type=content_type)
    message = fails(config(url=server.url("/customers"), as_table=True), context)
    assert message == (
        f"GET {server.url('/customers')} {what}; as_table needs a JSON array of objects"
    )
    assert parquet_files(tmp_path) == []


def test_as_table_refuses_rows_whose_values_do_not_make_a_column(
    server: Server, context: NodeContext, tmp_path: Path
) -> None:
    server.answer_json("/mixed", [{"id": 1}, {"id": "two"}])
    message = fails(config(url=server.url("/mixed"), as_table=True), context)
    assert message.startswith(f"GET {server.url('/mixed')} answered rows that do not make a table")
    assert parquet_files(tmp_path) == []


def test_json_that_does_not_parse_fails(server: Server, context: NodeContext) -> None:
    server.answers["/nan"] = Answer(body=b'{"ratio": NaN}')
    message = fails(config(url=server.url("/nan")), context)
    assert message.startswith(f"GET {server.url('/nan')} answered JSON that does not parse")


# -- limits and failures -------------------------------------------------------------------


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_an_answer_larger_than_max_response_bytes_fails(
    server: Server, context: NodeContext, announced: bool
) -> None:
    server.answers["/dump"] = Answer(
        body=b"x" * 200_000, content_type="text/plain", content_length=announced
    )
    message = fails(config(url=server.url("/dump"), max_response_bytes=1_000), context)
    assert message.startswith(f"GET {server.url('/dump')} answered ")
    assert "more than max_response_bytes (1000)" in message


def test_an_answer_of_exactly_max_response_bytes_is_read(
    server: Server, context: NodeContext
) -> None:
    server.answers["/dump"] = Answer(
        body=b"x" * 1_000, content_type="text/plain", content_length=False
    )
    output = run_http_request(config(url=server.url("/dump"), max_response_bytes=1_000), context)
    assert output == {"status": 200, "headers": {"content-type": "text/plain"}, "text": "x" * 1_000}


def test_a_server_slower_than_the_timeout_fails(server: Server, context: NodeContext) -> None:
    server.answers["/slow"] = Answer(delay=30)  # released when the test ends
    started = time.monotonic()
    message = fails(config(url=server.url("/slow?page=2"), timeout_seconds=0.2), context)
    assert time.monotonic() - started < 5
    assert message == f"GET {server.url('/slow')} timed out after 0.2s waiting for the answer"


def test_a_refused_connection_fails(context: NodeContext) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/orders"
    message = fails(config(method="DELETE", url=url, side_effects="none"), context)
    assert message.startswith(f"DELETE {url} failed: could not connect (")


def test_a_cancelled_run_sends_nothing(server: Server, context: NodeContext) -> None:
    context.cancel_event.set()
    with pytest.raises(NodeCancelledError):
        run_http_request(config(url=server.url("/x")), context)
    assert server.seen == []


# -- side effects and shadow runs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "declared", "effects"),
    [
        ("GET", None, "none"),
        ("head", None, "none"),
        ("OPTIONS", None, "none"),
        ("POST", None, "unsafe"),
        ("put", None, "unsafe"),
        ("PATCH", None, "unsafe"),
        ("DELETE", None, "unsafe"),
        ("POST", "none", "none"),
        ("POST", "sandboxed", "sandboxed"),
        ("GET", "unsafe", "unsafe"),
    ],
)
def test_side_effects_follow_the_method_unless_declared(
    method: str, declared: str | None, effects: str
) -> None:
    fields: dict[str, Any] = {"method": method, "url": "https://api.example.com/v1"}
    if declared is not None:
        fields["side_effects"] = declared
    assert config(**fields).side_effects() == effects


def test_a_post_without_declared_side_effects_may_not_shadow() -> None:
    registry = NodeRegistry([*BUILTIN_NODE_TYPES, HTTP_REQUEST])
    raw = workflow({"method": "POST", "url": "https://api.example.com/v1/orders"})
    refusal = shadow_refusal(parse_definition(raw, node_types=registry), registry)
    assert refusal is not None
    assert refusal.startswith("node 'call' (http_request) declares side effects `unsafe`")
    raw = workflow({"method": "POST", "url": "https://x.example/", "side_effects": "sandboxed"})
    assert shadow_refusal(parse_definition(raw, node_types=registry), registry) is None


def test_a_sandboxed_request_is_not_sent_in_a_shadow_run(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow = make_context(tmp_path, sandboxed=True)
    with caplog.at_level(logging.INFO, logger="figway.node.http_request"):
        output = run_http_request(
            config(method="POST", url=server.url("/orders"), side_effects="sandboxed"), shadow
        )
    assert output == {"status": None, "sent": False}
    assert server.seen == []
    assert any("shadow run: request not sent" in line for line in caplog.messages)


def test_a_read_only_request_is_sent_in_a_shadow_run(server: Server, tmp_path: Path) -> None:
    server.answer_json("/orders", [])
    output = run_http_request(
        config(url=server.url("/orders")), make_context(tmp_path, sandboxed=True)
    )
    assert output == {"status": 200, "headers": {"content-type": "application/json"}, "json": []}
    assert len(server.seen) == 1


def test_an_unsafe_request_is_refused_in_a_shadow_run(server: Server, tmp_path: Path) -> None:
    shadow = make_context(tmp_path, sandboxed=True)
    message = fails(config(method="DELETE", url=server.url("/orders/7")), shadow)
    assert message.startswith(f"DELETE {server.url('/orders/7')} was not sent")
    assert server.seen == []


# -- definitions ---------------------------------------------------------------------------


def workflow(node_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": "wf",
        "workspace_id": "ws",
        "folder_id": "f",
        "nodes": {"call": {"type": "http_request", "config": node_config}},
    }


URL = "https://api.example.com/v1/orders"


@pytest.mark.parametrize(
    ("node_config", "location", "words"),
    [
        ({}, "nodes.call.config.url", "Field required"),
        ({"url": "ftp://files.example.com/x"}, "nodes.call.config.url", "http:// or https://"),
        ({"url": "api.example.com/v1"}, "nodes.call.config.url", "http:// or https://"),
        ({"url": "https://etl:hunter22@api.example.com/"}, "nodes.call.config.url", "secret"),
        ({"url": "https://api.example.com/a b"}, "nodes.call.config.url", "spaces"),
        ({"url": "https:///v1"}, "nodes.call.config.url", "no host"),
        ({"url": "https://api.example.com:70000/"}, "nodes.call.config.url", "port"),
        ({"url": "https://x.example/" + "a" * 8_200}, "nodes.call.config.url", "8192"),
        ({"url": "secret:"}, "nodes.call.config.url", "secret:NAME"),
        ({"url": URL, "method": "FETCH"}, "nodes.call.config.method", "'GET'"),
        (
            {"url": URL, "body": "x", "json_body": {}},
            "nodes.call.config.json_body",
            "`json_body` or `body`",
        ),
        ({"url": URL, "expected_status": 99}, "nodes.call.config.expected_status", "100..599"),
        ({"url": URL, "expected_status": [200, 600]}, "nodes.call.config.expected_status", "600"),
        ({"url": URL, "expected_status": []}, "nodes.call.config.expected_status", "at least one"),
        ({"url": URL, "expected_status": "2xx"}, "nodes.call.config.expected_status", "a status"),
        ({"url": URL, "timeout_seconds": 0}, "nodes.call.config.timeout_seconds", "greater than 0"),
        ({"url": URL, "timeout_seconds": 3_601}, "nodes.call.config.timeout_seconds", "3600"),
        (
            {"url": URL, "max_response_bytes": 0},
            "nodes.call.config.max_response_bytes",
            "greater than 0",
        ),
        (
            {"url": URL, "max_response_bytes": 2**30 + 1},
            "nodes.call.config.max_response_bytes",
            "1073741824",
        ),
        (
            {"url": URL, "headers": {"Bad Header": "x"}},
            "nodes.call.config.headers.Bad Header.[key]",
            "pattern",
        ),
        (
            {"url": URL, "headers": {"X-A": "a\r\nX-B: b"}},
            "nodes.call.config.headers.X-A",
            "line breaks",
        ),
        (
            {"url": URL, "headers": {"X-A": "secret:not a name"}},
            "nodes.call.config.headers.X-A",
            "secret:NAME",
        ),
        (
            {"url": URL, "headers": {"Accept": "a", "accept": "b"}},
            "nodes.call.config.headers",
            "twice",
        ),
        (
            {"url": URL, "headers": {"Content-Length": "3"}},
            "nodes.call.config.headers",
            "from the body",
        ),
        (
            {"url": URL, "headers": {f"X-{i}": "v" for i in range(101)}},
            "nodes.call.config.headers",
            "100",
        ),
        ({"url": URL, "query": {"page": {"n": 1}}}, "nodes.call.config.query", "'page'"),
        ({"url": URL, "side_effects": "maybe"}, "nodes.call.config.side_effects", "'sandboxed'"),
        ({"url": URL, "data": {}}, "nodes.call.config.data", "Extra inputs"),
    ],
)
def test_a_wrong_config_is_refused_naming_the_field(
    node_config: dict[str, Any], location: str, words: str
) -> None:
    registry = NodeRegistry([*BUILTIN_NODE_TYPES, HTTP_REQUEST])
    with pytest.raises(DefinitionError) as caught:
        parse_definition(workflow(node_config), node_types=registry)
    [problem] = caught.value.problems
    assert problem.location == location
    assert words in problem.message


def test_a_valid_config_is_normalised() -> None:
    registry = NodeRegistry([*BUILTIN_NODE_TYPES, HTTP_REQUEST])
    raw = workflow(
        {
            "method": "patch",
            "url": "secret:orders-api",
            "headers": {"Authorization": "secret:orders_token", "Accept": "application/json"},
            "expected_status": 204,
            "json_body": {"state": "shipped"},
        }
    )
    spec = parse_definition(raw, node_types=registry).nodes["call"]
    parsed = HttpRequestConfig.model_validate(spec.config)
    assert parsed.method == "PATCH"
    assert parsed.timeout_seconds == 30
    assert parsed.max_response_bytes == 10 * 2**20
    assert parsed.side_effects() == "unsafe"


# -- where a request may go ------------------------------------------------------------------


def strict(context: NodeContext) -> NodeContext:
    """The same context under figway's default outbound policy (public addresses only)."""
    return dataclasses.replace(context, policy=NodePolicy())


def test_loopback_is_refused_the_same_whether_a_port_is_open_or_closed(
    server: Server, context: NodeContext
) -> None:
    open_port = fails(config(url=server.url("/v1")), strict(context))
    closed_port = fails(config(url=f"http://127.0.0.1:{free_port()}/v1"), strict(context))
    expected = (
        "destination '127.0.0.1' refused: it resolves to a loopback address, which "
        "http_request may not reach; an operator can open a host or network with "
        "FIGWAY_HTTP_ALLOW"
    )
    assert open_port == closed_port == expected
    assert server.seen == [], "nothing reached the server"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://localhost:9/", "a loopback address"),
        ("http://[::1]:9/", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://10.0.0.1/", "a private address"),
        ("http://0.0.0.0:9/", "an unspecified address"),
    ],
)
def test_internal_destinations_are_refused(url: str, kind: str, context: NodeContext) -> None:
    assert f"resolves to {kind}" in fails(config(url=url), strict(context))


def test_a_redirect_to_a_refused_address_is_refused_at_that_hop(
    server: Server, context: NodeContext
) -> None:
    # 127.0.0.1 is opened for the test server; the redirect names 127.0.0.2, still loopback.
    server.answers["/hop"] = Answer(
        status=302, headers={"Location": "http://127.0.0.2:9/admin"}, content_type=None
    )
    message = fails(config(url=server.url("/hop")), context)
    assert message.startswith("destination '127.0.0.2' refused: it resolves to a loopback")
    assert [seen.path for seen in server.seen] == ["/hop"]


def test_every_address_of_a_name_is_checked(
    monkeypatch: pytest.MonkeyPatch, context: NodeContext
) -> None:
    real = socket.getaddrinfo

    def two_addresses(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "mixed.test":
            return real("127.0.0.1", *args, **kwargs) + real("10.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    assert "resolves to a private address" in fails(config(url="http://mixed.test:9/"), context)


def test_the_connection_goes_to_the_address_that_was_checked(
    server: Server, monkeypatch: pytest.MonkeyPatch, context: NodeContext
) -> None:
    # A rebinding name: allowed the first time it is resolved, internal after. The node
    # resolves once and connects to what it checked.
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.0.0.1", "10.0.0.1"])

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server.answer_json("/v1", {"ok": True})
    output = run_http_request(config(url=f"http://rebind.test:{server.port}/v1"), context)
    assert output["json"] == {"ok": True}  # type: ignore[index]
    assert server.seen[0].headers["host"] == f"rebind.test:{server.port}"


# -- credentials in a definition -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"headers": {"Authorization": "Bearer abc.def"}}, "headers", "header 'Authorization'"),
        ({"headers": {"X-Api-Key": "k3y"}}, "headers", "header 'X-Api-Key'"),
        ({"url": "https://api.example.com/v1?api_key=k3y"}, "url", "(api_key=…)"),
        ({"url": "https://api.example.com/v1?TOKEN=k3y"}, "url", "(TOKEN=…)"),
        ({"url": "https://user:pw@api.example.com/v1"}, "url", "user:password@"),
    ],
)
def test_a_plain_credential_in_a_definition_is_refused(
    fields: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        config(**{"url": "https://api.example.com/v1", **fields})
    [error] = refused.value.errors()
    assert error["loc"][0] == where
    assert says in error["msg"]
    assert "k3y" not in error["msg"]
    assert "abc.def" not in error["msg"]
