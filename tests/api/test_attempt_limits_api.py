"""Limits per node attempt through a gateway on its embedded default, access control on:
a limit over the operator's cap is a 422 naming the node, the field and the setting; a
node over its limit fails with the reason, and the gateway's in-process workers run the
next run; a key without the scope to define code can neither set nor lift a limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.api_client import (
    Gateway,
    define,
    definition,
    error_fields,
    start,
    unique,
    wait_for_run,
)
from tests.support.gateway import client_of, running_gateway
from tests.support.keys import api_keys, bearer


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("capped"), auth="on", node_max_memory_mb=256
    ) as running:
        yield running


def key_client(gateway: Gateway, *scopes: str) -> Iterator[httpx.Client]:
    with api_keys(gateway.settings.resolved_database_url()) as store:
        key = store.create(name="limits " + " ".join(scopes), scopes=scopes, created_by="test")
    with client_of(gateway) as http:
        http.headers.update(bearer(key))
        yield http


@pytest.fixture
def client(capped: Gateway) -> Iterator[httpx.Client]:
    """A client whose key may define code and start runs."""
    yield from key_client(capped, "workflows", "code", "runs")


@pytest.fixture
def runs_only(capped: Gateway) -> Iterator[httpx.Client]:
    yield from key_client(capped, "runs")


def allocate(megabytes: int, memory_mb: int) -> dict[str, object]:
    return {
        "type": "python",
        "config": {"callable": "tests.support.hogs:allocate", "kwargs": {"megabytes": megabytes}},
        "limits": {"memory_mb": memory_mb},
    }


def test_a_limit_over_the_operators_cap_is_a_422_naming_node_field_and_setting(
    client: httpx.Client,
) -> None:
    workflow_id = unique("over-cap")
    body = definition(workflow_id, {"crunch": allocate(1, 1024)})
    response = client.put(f"/workflows/{workflow_id}", json=body)
    assert response.status_code == 422, response.text
    assert error_fields(response) == {"nodes.crunch.limits.memory_mb"}
    assert "at most 256 (FIGWAY_NODE_MAX_MEMORY_MB)" in response.json()["detail"]


def test_an_embedded_worker_fails_a_node_over_its_limit_and_runs_the_next(
    client: httpx.Client,
) -> None:
    over = wait_for_run(
        client, start(client, define(client, {"big": allocate(512, 64)}))["job_run_id"]
    )
    assert over["status"] == "failed"
    assert over["nodes"]["big"]["error"] == "memory limit 64 MiB exceeded"
    within = wait_for_run(
        client, start(client, define(client, {"small": allocate(8, 64)}))["job_run_id"]
    )
    assert within["status"] == "succeeded", within
    assert within["nodes"]["small"]["output"] == {"held_mb": 8}


def test_a_runs_key_can_neither_set_nor_lift_a_nodes_limits(
    client: httpx.Client, runs_only: httpx.Client
) -> None:
    workflow_id = unique("runs-key-limits")
    refused = runs_only.put(
        f"/workflows/{workflow_id}", json=definition(workflow_id, {"big": allocate(1, 64)})
    )
    assert refused.status_code == 403, refused.text
    assert client.get(f"/workflows/{workflow_id}").status_code == 404

    # A run's body names no limits: whatever it sends, the definition's limit holds.
    defined = define(client, {"big": allocate(512, 64)})
    lifted = {"memory_mb": 4096}
    job_run_id = start(
        runs_only, defined, limits=lifted, nodes={"big": {"limits": lifted}},
        parameters={"limits": lifted},
    )["job_run_id"]  # fmt: skip
    over = wait_for_run(runs_only, job_run_id)
    assert over["nodes"]["big"]["error"] == "memory limit 64 MiB exceeded", over
