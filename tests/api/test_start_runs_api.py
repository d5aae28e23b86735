"""POST /workflow_runs/: starting runs, idempotency on job_run_id and refusing bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.api_client import (
    assert_started_once,
    define,
    error_fields,
    get_run,
    run_body,
    start,
    unique,
    wait_for,
    wait_for_run,
)

ID_FIELDS = ("workspace_id", "folder_id", "job_id", "workflow_id")


def printing_node(marker: str) -> dict[str, Any]:
    """A python node that prints ``marker`` once per attempt (print() with only ``end``)."""
    return {
        "type": "python",
        "config": {"callable": "builtins:print", "kwargs": {"end": f"{marker}\n"}},
    }


def stats(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/workflow_runs/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def log_messages(client: httpx.Client, job_run_id: str) -> list[str]:
    response = client.get(f"/workflow_runs/{job_run_id}/logs")
    assert response.status_code == 200, response.text
    return [line["message"] for line in response.json()["lines"]]


def with_field(workflow_id: str, field: str, value: object) -> dict[str, Any]:
    """A valid run body for ``workflow_id`` with one field set to ``value``."""
    body = run_body(workflow_id)
    body[field] = value
    return body


@pytest.fixture
def noop_workflow(client: httpx.Client) -> str:
    return define(client, {"a": {"type": "noop"}, "b": {"type": "noop"}}, {"b": ["a"]})


def test_post_starts_a_run_on_rq(client: httpx.Client, noop_workflow: str) -> None:
    job_run_id = unique("run")
    response = client.post(
        "/workflow_runs/",
        json=run_body(noop_workflow, job_run_id=job_run_id, from_job="job0"),
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["job_run_id"] == job_run_id
    assert run["backend"] == "rq"
    assert run["workflow_id"] == noop_workflow
    assert run["from_job"] == "job0"
    assert run["status"] in {"queued", "running", "succeeded"}
    assert set(run["nodes"]) == {"a", "b"}
    finished = wait_for_run(client, job_run_id)
    assert finished["status"] == "succeeded"


def test_post_without_a_job_run_id_generates_a_fresh_one(
    client: httpx.Client, noop_workflow: str
) -> None:
    first = start(client, noop_workflow)
    second = start(client, noop_workflow)
    assert first["job_run_id"]
    assert second["job_run_id"]
    assert first["job_run_id"] != second["job_run_id"]
    for run in (first, second):
        assert get_run(client, run["job_run_id"])["workflow_id"] == noop_workflow
        wait_for_run(client, run["job_run_id"])


def test_repeating_a_job_run_id_returns_the_same_run_and_starts_nothing(
    client: httpx.Client,
) -> None:
    marker = unique("ran")
    workflow_id = define(
        client,
        {"nap": {"type": "sleep", "config": {"seconds": 0.5}}, "talk": printing_node(marker)},
        {"talk": ["nap"]},
    )
    job_run_id = unique("run")
    total_before = stats(client)["total"]
    created = client.post("/workflow_runs/", json=run_body(workflow_id, job_run_id=job_run_id))
    assert created.status_code == 201, created.text

    while_running = client.post(
        "/workflow_runs/", json=run_body(workflow_id, job_run_id=job_run_id)
    )
    assert while_running.status_code == 200, while_running.text
    assert while_running.json()["job_run_id"] == job_run_id
    assert while_running.json()["created_at"] == created.json()["created_at"]

    finished = wait_for_run(client, job_run_id)
    after_finish = client.post("/workflow_runs/", json=run_body(workflow_id, job_run_id=job_run_id))
    assert after_finish.status_code == 200
    assert after_finish.json()["status"] == "succeeded"

    run = wait_for_run(client, job_run_id)
    assert run == finished  # nothing moved after the repeats
    assert {node["attempts"] for node in run["nodes"].values()} == {1}
    assert log_messages(client, job_run_id).count(marker) == 1
    after = stats(client)
    assert after["total"] == total_before + 1
    assert after["by_workflow"][workflow_id] == {"total": 1, "succeeded": 1}


def test_ten_identical_posts_at_once_make_one_run(client: httpx.Client) -> None:
    marker = unique("ran")
    workflow_id = define(
        client,
        {"first": printing_node(marker), "second": printing_node(marker)},
        {"second": ["first"]},
    )
    body = run_body(workflow_id, job_run_id=unique("run"))
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: client.post("/workflow_runs/", json=body), range(10)))

    assert_started_once(responses)
    assert {response.json()["job_run_id"] for response in responses} == {body["job_run_id"]}

    run = wait_for_run(client, body["job_run_id"])
    assert run["status"] == "succeeded"
    assert {node_id: node["attempts"] for node_id, node in run["nodes"].items()} == {
        "first": 1,
        "second": 1,
    }
    # Each node printed once: it ran exactly once.
    assert log_messages(client, body["job_run_id"]).count(marker) == 2
    assert stats(client)["by_workflow"][workflow_id] == {"total": 1, "succeeded": 1}


def test_a_job_run_id_of_another_workflow_is_a_conflict(
    client: httpx.Client, noop_workflow: str
) -> None:
    other = define(client, {"x": {"type": "noop"}})
    job_run_id = start(client, noop_workflow, job_run_id=unique("run"))["job_run_id"]
    response = client.post("/workflow_runs/", json=run_body(other, job_run_id=job_run_id))
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert job_run_id in detail
    assert noop_workflow in detail
    assert other in detail
    assert get_run(client, job_run_id)["workflow_id"] == noop_workflow
    wait_for_run(client, job_run_id)


def test_an_unknown_workflow_is_404_naming_it(client: httpx.Client) -> None:
    workflow_id = unique("missing")
    job_run_id = unique("run")
    response = client.post("/workflow_runs/", json=run_body(workflow_id, job_run_id=job_run_id))
    assert response.status_code == 404, response.text
    assert workflow_id in response.json()["detail"]
    assert client.get(f"/workflow_runs/{job_run_id}").status_code == 404  # nothing recorded


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b"[]", b'"run"'], ids=["malformed", "empty", "list", "string"]
)
def test_a_body_that_is_not_a_json_object_is_refused(client: httpx.Client, content: bytes) -> None:
    response = client.post(
        "/workflow_runs/", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_malformed_json_is_reported_as_a_json_error(client: httpx.Client) -> None:
    response = client.post(
        "/workflow_runs/", content=b'{"workflow_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "JSON" in response.json()["detail"]


@pytest.mark.parametrize("missing", ID_FIELDS)
def test_each_required_field_is_named_when_missing(
    client: httpx.Client, noop_workflow: str, missing: str
) -> None:
    body = run_body(noop_workflow)
    del body[missing]
    response = client.post("/workflow_runs/", json=body)
    assert response.status_code == 422, response.text
    assert error_fields(response) == {missing}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workspace_id", 5),
        ("folder_id", None),
        ("job_id", ["j"]),
        ("workflow_id", {"id": "x"}),
        ("job_run_id", 12),
        ("from_job", True),
        ("parameters", "not-a-mapping"),
        ("parameters", [1, 2]),
    ],
)
def test_wrong_types_are_refused_naming_the_field(
    client: httpx.Client, noop_workflow: str, field: str, value: object
) -> None:
    response = client.post("/workflow_runs/", json=with_field(noop_workflow, field, value))
    assert response.status_code == 422, response.text
    assert error_fields(response) == {field}
    assert field in response.json()["detail"]


@pytest.mark.parametrize("field", [*ID_FIELDS, "job_run_id"])
def test_empty_ids_are_refused_naming_the_field(
    client: httpx.Client, noop_workflow: str, field: str
) -> None:
    response = client.post("/workflow_runs/", json=with_field(noop_workflow, field, ""))
    assert response.status_code == 422, response.text
    assert error_fields(response) == {field}


@pytest.mark.parametrize("field", [*ID_FIELDS, "job_run_id", "from_job"])
def test_ids_longer_than_128_characters_are_refused(
    client: httpx.Client, noop_workflow: str, field: str
) -> None:
    response = client.post("/workflow_runs/", json=with_field(noop_workflow, field, "x" * 129))
    assert response.status_code == 422, response.text
    assert error_fields(response) == {field}
    assert "128" in response.json()["detail"]


def test_a_128_character_job_run_id_is_accepted(client: httpx.Client, noop_workflow: str) -> None:
    job_run_id = unique("run").ljust(128, "0")
    response = client.post("/workflow_runs/", json=run_body(noop_workflow, job_run_id=job_run_id))
    assert response.status_code == 201, response.text
    assert wait_for_run(client, job_run_id)["job_run_id"] == job_run_id


def test_unknown_fields_are_ignored_as_the_legacy_api_did(
    client: httpx.Client, noop_workflow: str
) -> None:
    run = start(client, noop_workflow, priority="high", callback_url="http://example.invalid")
    assert wait_for_run(client, run["job_run_id"])["status"] == "succeeded"


def test_parameters_reach_the_nodes(client: httpx.Client) -> None:
    workflow_id = define(
        client,
        {"echo": {"type": "python", "config": {"callable": f"{__name__}:echo_parameters"}}},
    )
    run = start(client, workflow_id, parameters={"day": "2024-05-01", "limit": 3})
    finished = wait_for_run(client, run["job_run_id"])
    assert finished["status"] == "succeeded", finished
    assert finished["nodes"]["echo"]["output"] == {"day": "2024-05-01", "limit": 3}


def echo_parameters(context: Any) -> dict[str, Any]:
    """A node function (called in the gateway's worker threads) returning the run's parameters."""
    return dict(context.parameters)


def test_the_run_is_visible_while_a_node_sleeps(client: httpx.Client) -> None:
    workflow_id = define(client, {"nap": {"type": "sleep", "config": {"seconds": 1}}})
    job_run_id = start(client, workflow_id)["job_run_id"]
    running = wait_for(
        lambda: get_run(client, job_run_id),
        lambda run: run["nodes"]["nap"]["status"] == "running",
        "the sleep node starting",
    )
    assert running["status"] == "running"
    assert running["started_at"] is not None
    assert running["finished_at"] is None
    assert wait_for_run(client, job_run_id)["status"] == "succeeded"


@pytest.mark.parametrize("job_run_id", ["stats", "nightly/2024-05-01", ".."])
def test_an_accepted_job_run_id_can_be_read_back(
    client: httpx.Client, noop_workflow: str, job_run_id: str
) -> None:
    # A run the API accepts must be reachable at /workflow_runs/{job_run_id}; otherwise
    # it should be refused up front with the field named.
    response = client.post("/workflow_runs/", json=run_body(noop_workflow, job_run_id=job_run_id))
    if response.status_code == 422:
        assert error_fields(response) == {"job_run_id"}
        return
    assert response.status_code in (200, 201), response.text
    path = "/workflow_runs/" + quote(job_run_id, safe="")
    fetched = client.get(path)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json().get("job_run_id") == job_run_id
