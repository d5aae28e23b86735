"""PUT and GET /workflows/{workflow_id}: definitions, versions and every refusal reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.api_client import definition, error_fields, unique

Definition = dict[str, Any]


def chain(workflow_id: str, length: int) -> Definition:
    nodes = {f"n{i}": {"type": "noop"} for i in range(length)}
    dependencies = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(length)}
    return definition(workflow_id, nodes, dependencies)


def simple(workflow_id: str) -> Definition:
    return definition(
        workflow_id,
        {"a": {"type": "noop"}, "b": {"type": "sleep", "config": {"seconds": 0}}},
        {"b": ["a"]},
    )


def test_put_creates_then_replaces_with_a_new_version(client: httpx.Client) -> None:
    workflow_id = unique("wf")
    created = client.put(f"/workflows/{workflow_id}", json=simple(workflow_id))
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["workflow_id"] == workflow_id
    assert first["version"] == 1
    assert first["definition"]["nodes"]["b"]["config"] == {"seconds": 0}

    fetched = client.get(f"/workflows/{workflow_id}")
    assert fetched.status_code == 200
    assert fetched.json() == first

    changed = simple(workflow_id)
    changed["nodes"]["b"]["config"]["seconds"] = 1
    replaced = client.put(f"/workflows/{workflow_id}", json=changed)
    assert replaced.status_code == 200, replaced.text
    second = replaced.json()
    assert second["version"] == 2
    assert second["definition"]["nodes"]["b"]["config"] == {"seconds": 1}
    assert second["registered_at"] == first["registered_at"]
    assert client.get(f"/workflows/{workflow_id}").json()["version"] == 2

    unchanged = client.put(f"/workflows/{workflow_id}", json=changed)
    assert unchanged.status_code == 200
    assert unchanged.json()["version"] == 2  # the same definition again is not a new version


def test_the_workflow_id_may_come_from_the_path_only(client: httpx.Client) -> None:
    workflow_id = unique("wf")
    body = simple(workflow_id)
    del body["workflow_id"]
    response = client.put(f"/workflows/{workflow_id}", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["definition"]["workflow_id"] == workflow_id


def cycle(d: Definition) -> None:
    d["nodes"] = {"a": {"type": "noop"}, "b": {"type": "noop"}}
    d["dependencies"] = {"a": ["b"], "b": ["a"]}


def unknown_dependency(d: Definition) -> None:
    d["dependencies"] = {"b": ["a", "nowhere"]}


def unknown_node_type(d: Definition) -> None:
    d["nodes"]["a"] = {"type": "teleport"}


def too_deep(d: Definition) -> None:
    d.update(chain(d["workflow_id"], 21))


def negative_sleep(d: Definition) -> None:
    d["nodes"]["b"]["config"] = {"seconds": -1}


def missing_sleep_seconds(d: Definition) -> None:
    d["nodes"]["b"]["config"] = {}


def unknown_config_key(d: Definition) -> None:
    d["nodes"]["a"] = {"type": "fail", "config": {"tims": 2}}


def callable_without_colon(d: Definition) -> None:
    d["nodes"]["a"] = {"type": "python", "config": {"callable": "statistics.mean"}}


def negative_retries(d: Definition) -> None:
    d["nodes"]["a"]["retries"] = -1


def tiny_memory_limit(d: Definition) -> None:
    d["nodes"]["b"]["limits"] = {"memory_mb": 1, "cpu_seconds": 30}


def unknown_limit(d: Definition) -> None:
    d["nodes"]["a"]["limits"] = {"gpus": 1}


def unknown_pool(d: Definition) -> None:
    d["pool"] = "gpu"


def dependencies_of_an_unknown_node(d: Definition) -> None:
    d["dependencies"]["ghost"] = ["a"]


def empty_nodes(d: Definition) -> None:
    d["nodes"] = {}
    d["dependencies"] = {}


def nodes_not_a_mapping(d: Definition) -> None:
    d["nodes"] = ["a", "b"]
    d["dependencies"] = {}


def missing_workspace(d: Definition) -> None:
    del d["workspace_id"]


@pytest.mark.parametrize(
    ("break_it", "field", "said"),
    [
        (cycle, "dependencies", "cycle: a -> b -> a"),
        (unknown_dependency, "dependencies.b", "nowhere"),
        (unknown_node_type, "nodes.a.type", "teleport"),
        (too_deep, "dependencies", "at most 20"),
        (negative_sleep, "nodes.b.config.seconds", "greater than or equal to 0"),
        (missing_sleep_seconds, "nodes.b.config.seconds", "required"),
        (unknown_config_key, "nodes.a.config.tims", "tims"),
        (callable_without_colon, "nodes.a.config.callable", "nodes.a.config.callable"),
        (negative_retries, "nodes.a.retries", "nodes.a.retries"),
        (tiny_memory_limit, "nodes.b.limits.memory_mb", "greater than or equal to 16"),
        (unknown_limit, "nodes.a.limits.gpus", "nodes.a.limits.gpus"),
        (unknown_pool, "pool", "gpu"),
        (dependencies_of_an_unknown_node, "dependencies.ghost", "ghost"),
        (empty_nodes, "nodes", "nodes"),
        (nodes_not_a_mapping, "nodes", "nodes"),
        (missing_workspace, "workspace_id", "workspace_id"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_an_invalid_definition_is_refused_naming_the_place(
    client: httpx.Client, break_it: Callable[[Definition], None], field: str, said: str
) -> None:
    workflow_id = unique("bad")
    body = simple(workflow_id)
    break_it(body)
    response = client.put(f"/workflows/{workflow_id}", json=body)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert said in response.json()["detail"]
    assert client.get(f"/workflows/{workflow_id}").status_code == 404  # nothing was stored


def test_twenty_levels_are_accepted(client: httpx.Client) -> None:
    workflow_id = unique("deep")
    response = client.put(f"/workflows/{workflow_id}", json=chain(workflow_id, 20))
    assert response.status_code == 201, response.text


def test_a_replacement_that_is_invalid_keeps_the_stored_version(client: httpx.Client) -> None:
    workflow_id = unique("wf")
    assert client.put(f"/workflows/{workflow_id}", json=simple(workflow_id)).status_code == 201
    broken = simple(workflow_id)
    unknown_node_type(broken)
    assert client.put(f"/workflows/{workflow_id}", json=broken).status_code == 422
    kept = client.get(f"/workflows/{workflow_id}").json()
    assert kept["version"] == 1
    assert kept["definition"]["nodes"]["a"]["type"] == "noop"


def test_a_workflow_id_differing_from_the_path_is_refused(client: httpx.Client) -> None:
    workflow_id = unique("wf")
    response = client.put(f"/workflows/{workflow_id}", json=simple("someone_else"))
    assert response.status_code == 422, response.text
    assert error_fields(response) == {"workflow_id"}
    assert "someone_else" in response.json()["detail"]
    assert workflow_id in response.json()["detail"]
    assert client.get(f"/workflows/{workflow_id}").status_code == 404


@pytest.mark.parametrize(
    "content",
    [b"[1, 2]", b'"a string"', b"42", b"null", b"{not json", b""],
    ids=["list", "string", "number", "null", "malformed", "empty"],
)
def test_a_body_that_is_not_a_json_object_is_refused(client: httpx.Client, content: bytes) -> None:
    workflow_id = unique("wf")
    response = client.put(
        f"/workflows/{workflow_id}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert client.get(f"/workflows/{workflow_id}").status_code == 404


def test_an_invalid_workflow_id_in_the_path_is_refused(client: httpx.Client) -> None:
    response = client.put("/workflows/has space", json=simple("has space"))
    assert response.status_code == 422, response.text
    assert "workflow_id" in error_fields(response)


def test_get_of_an_unknown_workflow_is_404_naming_it(client: httpx.Client) -> None:
    workflow_id = unique("nope")
    response = client.get(f"/workflows/{workflow_id}")
    assert response.status_code == 404
    assert workflow_id in response.json()["detail"]
