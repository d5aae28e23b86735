"""Limits on the cheap side of the door, through a real gateway with access control on: a
client address's rate before any key lookup, verified keys remembered for at most a few
seconds, and caps on live followers per key and per gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import websockets

from backends.store.api_keys import NewKey
from tests.support.api_client import Gateway
from tests.support.gateway import running_gateway
from tests.support.keys import (
    api_keys,
    bearer,
    check_forged_keys_run_out_of_their_address_allowance,
    client_from,
)

#: A token every ten seconds: far slower than this module's requests, so what a test sees
#: does not depend on how fast it runs.
ADDRESS_RATE = 6
KEY_CACHE_SECONDS = 2.0
PER_KEY = 2
TOTAL = 3


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("limits"),
        auth="on",
        address_rate_limit_per_minute=ADDRESS_RATE,
        key_cache_seconds=KEY_CACHE_SECONDS,
        live_followers_per_key=PER_KEY,
        live_followers_max=TOTAL,
    ) as running:
        yield running


def new_key(gateway: Gateway, *scopes: str) -> NewKey:
    with api_keys(gateway.settings.resolved_database_url()) as store:
        return store.create(name="limits", scopes=scopes, created_by="test")


def test_forged_keys_run_out_of_their_address_allowance_before_any_lookup(
    gateway: Gateway,
) -> None:
    check_forged_keys_run_out_of_their_address_allowance(gateway.base_url, new_key(gateway, "runs"))


def test_a_revoked_key_is_refused_once_the_key_cache_time_has_passed(gateway: Gateway) -> None:
    key = new_key(gateway, "runs")
    with client_from(gateway.base_url, "127.0.0.4") as client:
        assert client.get("/workflow_runs/stats", headers=bearer(key)).status_code == 200
        with api_keys(gateway.settings.resolved_database_url()) as store:
            assert store.revoke(key_id=key.key.key_id, revoked_by="test")
        time.sleep(KEY_CACHE_SECONDS)  # the documented bound: FIGWAY_KEY_CACHE_SECONDS
        assert client.get("/workflow_runs/stats", headers=bearer(key)).status_code == 401


@asynccontextmanager
async def following(gateway: Gateway, key: NewKey, run_id: str) -> AsyncIterator[object]:
    url = gateway.base_url.replace("http://", "ws://") + f"/ws/workflow_runs/{run_id}"
    # From an address of its own: the other tests' requests do not count against it.
    async with websockets.connect(
        url, additional_headers=bearer(key), local_addr=("127.0.0.6", 0)
    ) as socket:
        yield socket


async def close_of(socket: object) -> tuple[int | None, str]:
    assert isinstance(socket, websockets.ClientConnection)
    try:
        while True:
            await asyncio.wait_for(socket.recv(), timeout=30)
    except websockets.ConnectionClosed:
        return socket.close_code, socket.close_reason or ""


async def snapshot_of(socket: object) -> str:
    assert isinstance(socket, websockets.ClientConnection)
    return str(await asyncio.wait_for(socket.recv(), timeout=30))


def test_live_followers_are_capped_per_key_and_per_gateway_with_1013(gateway: Gateway) -> None:
    writer = new_key(gateway, "workflows")
    one, two = new_key(gateway, "runs"), new_key(gateway, "runs")
    with client_from(gateway.base_url, "127.0.0.5") as client:
        workflow = {
            "workspace_id": "ws",
            "folder_id": "f",
            "nodes": {"nap": {"type": "sleep", "config": {"seconds": 60}}},
        }
        assert client.put("/workflows/napping", json=workflow, headers=bearer(writer)).is_success
        body = {"workspace_id": "ws", "folder_id": "f", "job_id": "j", "workflow_id": "napping"}
        started = client.post(
            "/workflow_runs/", json={**body, "job_run_id": "nap-1"}, headers=bearer(one)
        )
        assert started.status_code == 201, started.text
        try:

            async def scenario() -> None:
                async with (
                    following(gateway, one, "nap-1") as first,
                    following(gateway, one, "nap-1") as second,
                ):
                    assert "snapshot" in await snapshot_of(first)
                    assert "snapshot" in await snapshot_of(second)
                    async with following(gateway, one, "nap-1") as third:
                        code, reason = await close_of(third)
                        assert code == 1013
                        assert one.key.key_id in reason
                    async with following(gateway, two, "nap-1") as fourth:
                        assert "snapshot" in await snapshot_of(fourth)
                        async with following(gateway, two, "nap-1") as fifth:
                            code, reason = await close_of(fifth)
                            assert code == 1013
                            assert f"{TOTAL} live followers" in reason
                # Places are given back when clients leave.
                async with following(gateway, one, "nap-1") as again:
                    assert "snapshot" in await snapshot_of(again)

            asyncio.run(scenario())
        finally:
            client.delete("/workflow_runs/nap-1", headers=bearer(one))
