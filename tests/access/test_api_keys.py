"""Access control through a real gateway: every route, with no key, an unknown key, a key
without the route's scope, and the right one; WebSockets; revocation; the CLI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest

from backends.store.api_keys import NewKey
from gateway.config import Settings
from gateway.web.app import create_app
from tests.support.api_client import Gateway
from tests.support.gateway import client_of, running_gateway
from tests.support.keys import api_keys, one_key_per_scope
from tests.support.live import close_of

OPEN = {"/healthz", "/readyz"}
SCOPE_OF_PREFIX = {
    "/workflow_runs": "runs",
    "/live": "runs",
    "/workflows": "workflows",
    "/routing": "admin",
    "/metrics": None,  # any key, with FIGWAY_METRICS_REQUIRE_KEY
}


def scope_of(path: str) -> str | None:
    for prefix, scope in SCOPE_OF_PREFIX.items():
        if path.startswith(prefix):
            return scope
    raise AssertionError(f"{path}: no scope known for it; add it to SCOPE_OF_PREFIX")


def every_route() -> list[tuple[str, str]]:
    """(method, path with made-up ids) of every route in the OpenAPI schema, but the open ones."""
    routes = []
    for path, operations in create_app().openapi()["paths"].items():
        if path in OPEN:
            continue
        concrete = re.sub(r"\{[^}]+\}", "no-such-thing", path)
        routes.extend((method.upper(), concrete) for method in sorted(operations))
    return routes


RULES = "phase: 1\ndefault: rq\nrules: []\n"
MAX_BODY = 64_000
RATE = 300


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("access")
    (data_dir / "routing_rules.yaml").write_text(RULES)
    with running_gateway(
        data_dir,
        auth="on",
        metrics_require_key=True,
        routing_rules=data_dir / "routing_rules.yaml",
        routing_reload_seconds=3600,  # only POST /routing/reload reads the file again
        max_body_bytes=MAX_BODY,
        rate_limit_per_minute=RATE,
        # These tests look at each key's rate and at revocation taking effect at once;
        # tests/access/test_limits.py tries the address's rate and the key cache.
        address_rate_limit_per_minute=0,
        key_cache_seconds=0,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def keys(gateway: Gateway) -> dict[str, NewKey]:
    return one_key_per_scope(gateway.settings.resolved_database_url(), "runs", "workflows", "admin")


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with client_of(gateway) as http:
        yield http


def bearer(key: NewKey | str) -> dict[str, str]:
    token = key if isinstance(key, str) else key.token
    return {"Authorization": f"Bearer {token}"}


ROUTES = every_route()


def test_the_matrix_covers_every_guarded_route() -> None:
    paths = {path for _, path in ROUTES}
    assert any(p.startswith("/workflow_runs") for p in paths)
    assert any(p.startswith("/workflows") for p in paths)
    assert any(p.startswith("/routing") for p in paths)
    assert "/metrics" in paths


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_answers_401_403_or_serves_by_the_key(
    client: httpx.Client, keys: dict[str, NewKey], method: str, path: str
) -> None:
    scope = scope_of(path)
    missing = client.request(method, path)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = client.request(method, path, headers=bearer("fgw_000000000000_not-a-real-secret"))
    assert unknown.status_code == 401, unknown.text
    if scope is not None:
        other = next(key for name, key in keys.items() if name != scope)
        wrong = client.request(method, path, headers=bearer(other))
        assert wrong.status_code == 403, wrong.text
        assert scope in wrong.json()["detail"]
    right = client.request(method, path, headers=bearer(keys[scope or "runs"]))
    assert right.status_code not in (401, 403), right.text


def test_without_a_key_a_run_that_exists_and_one_that_does_not_look_the_same(
    client: httpx.Client, keys: dict[str, NewKey]
) -> None:
    workflow = {"workspace_id": "ws", "folder_id": "f", "nodes": {"a": {"type": "noop"}}}
    assert client.put("/workflows/acc", json=workflow, headers=bearer(keys["workflows"])).is_success
    body = {"workspace_id": "ws", "folder_id": "f", "job_id": "j", "workflow_id": "acc"}
    started = client.post(
        "/workflow_runs/", json={**body, "job_run_id": "acc-1"}, headers=bearer(keys["runs"])
    )
    assert started.status_code == 201, started.text
    real = client.get("/workflow_runs/acc-1")
    made_up = client.get("/workflow_runs/acc-never")
    assert (real.status_code, real.json()) == (made_up.status_code, made_up.json())
    wrong_real = client.get("/workflow_runs/acc-1", headers=bearer(keys["admin"]))
    wrong_made_up = client.get("/workflow_runs/acc-never", headers=bearer(keys["admin"]))
    assert (wrong_real.status_code, wrong_real.json()) == (403, wrong_made_up.json())


def test_health_checks_stay_open(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)


def test_a_revoked_key_is_refused_at_once(client: httpx.Client, gateway: Gateway) -> None:
    with api_keys(gateway.settings.resolved_database_url()) as store:
        key = store.create(name="short-lived", scopes=["runs"], created_by="test")
        assert client.get("/workflow_runs/stats", headers=bearer(key)).status_code == 200
        assert store.revoke(key_id=key.key.key_id, revoked_by="test")
        assert client.get("/workflow_runs/stats", headers=bearer(key)).status_code == 401
        assert not store.revoke(key_id=key.key.key_id, revoked_by="test")  # once


def test_a_websocket_needs_a_runs_key_as_header_or_token(
    gateway: Gateway, keys: dict[str, NewKey]
) -> None:
    base = gateway.base_url.replace("http://", "ws://") + "/ws/workflow_runs/"
    code, _ = asyncio.run(close_of(base + "acc-never"))
    assert code == 4401
    code, _ = asyncio.run(close_of(base + "acc-never", bearer(keys["admin"])))
    assert code == 4403
    # Past the key, an unknown run: the close says so (and only now).
    code, _ = asyncio.run(close_of(base + f"acc-never?token={keys['runs'].token}"))
    assert code == 4404
    code, _ = asyncio.run(close_of(base + "acc-never", bearer(keys["runs"])))
    assert code == 4404


def test_a_rules_change_is_recorded_with_the_key_that_made_it(
    client: httpx.Client, gateway: Gateway, keys: dict[str, NewKey]
) -> None:
    rules = gateway.settings.routing_rules
    assert rules is not None
    rules.write_text(RULES.replace("phase: 1", "phase: 2"))
    reloaded = client.post("/routing/reload", headers=bearer(keys["admin"]))
    assert reloaded.status_code == 200, reloaded.text
    history = client.get("/routing/history", headers=bearer(keys["admin"])).json()
    latest = history[0] if isinstance(history, list) else history["versions"][0]
    assert f"reloaded by key {keys['admin'].key.key_id}" in latest["source"]


# -- hardening ------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413(
    client: httpx.Client, keys: dict[str, NewKey]
) -> None:
    big = {"workspace_id": "ws", "folder_id": "f", "description": "x" * MAX_BODY}
    declared = client.put("/workflows/too-big", json=big, headers=bearer(keys["workflows"]))
    assert declared.status_code == 413
    assert "FIGWAY_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"workspace_id": "ws", "folder_id": "f", "description": "'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.put(
        "/workflows/too-big",
        content=chunks(),
        headers={**bearer(keys["workflows"]), "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert client.get("/workflows/too-big", headers=bearer(keys["workflows"])).status_code == 404


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    client: httpx.Client, gateway: Gateway
) -> None:
    with api_keys(gateway.settings.resolved_database_url()) as store:
        busy = store.create(name="busy", scopes=["runs"], created_by="test")
        calm = store.create(name="calm", scopes=["runs"], created_by="test")
    # The bucket starts full (RATE) and refills at RATE a minute: asking faster than that
    # empties it, so a 429 comes long before twice RATE requests.
    answers = []
    for _ in range(2 * RATE):
        limited = client.get("/workflow_runs/stats", headers=bearer(busy))
        answers.append(limited.status_code)
        if limited.status_code != 200:
            break
    assert answers[:RATE] == [200] * RATE
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert busy.key.key_id in limited.json()["detail"]
    assert client.get("/workflow_runs/stats", headers=bearer(calm)).status_code == 200


def test_an_error_body_never_holds_a_stack_trace(
    client: httpx.Client, keys: dict[str, NewKey]
) -> None:
    bad = client.post(
        "/workflow_runs/",
        content=b'{"workspace_id": ',
        headers={**bearer(keys["runs"]), "content-type": "application/json"},
    )
    assert bad.status_code == 422
    assert "Traceback" not in bad.text
    assert 'File "' not in bad.text


def preflight(settings: Settings) -> httpx.Response:
    """A browser's CORS preflight, answered by the app's middleware (no lifespan needed)."""

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        # A loopback name: with access control off, other host names get 421.
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.options(
                "/workflow_runs/stats",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "GET",
                },
            )

    return asyncio.run(ask())


def test_cors_is_closed_unless_origins_are_named() -> None:
    closed = preflight(Settings(_env_file=None, auth="off"))
    assert closed.status_code != 421
    assert "access-control-allow-origin" not in closed.headers
    opened = preflight(
        Settings(_env_file=None, auth="off", cors_origins=["https://app.example.com"])
    )
    assert opened.headers["access-control-allow-origin"] == "https://app.example.com"
