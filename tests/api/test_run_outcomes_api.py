"""GET /workflow_runs/{id}: how runs end, node by node, on the embedded RQ backend."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.api_client import define, get_run, start, unique, wait_for_run


def log_lines(client: httpx.Client, job_run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/workflow_runs/{job_run_id}/logs")
    assert response.status_code == 200, response.text
    lines: list[dict[str, Any]] = response.json()["lines"]
    return lines


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def when(timestamp: str | None) -> datetime:
    assert timestamp is not None, "expected a timestamp"
    return datetime.fromisoformat(timestamp)


def test_the_hello_example_succeeds_node_by_node(client: httpx.Client) -> None:
    example = yaml.safe_load((EXAMPLES / "hello.yaml").read_text())
    workflow_id = unique("hello")
    example["workflow_id"] = workflow_id
    assert client.put(f"/workflows/{workflow_id}", json=example).status_code == 201

    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    assert run["status"] == "succeeded", run
    assert run["error"] is None
    assert set(run["nodes"]) == {"say_hello", "add_up", "join"}
    for node_id, node in run["nodes"].items():
        assert node["status"] == "succeeded", (node_id, node)
        assert node["attempts"] == 1
        assert node["error"] is None
    assert run["nodes"]["add_up"]["output"] == 2.5
    assert run["nodes"]["join"]["type"] == "noop"
    assert when(run["created_at"]) <= when(run["started_at"]) <= when(run["finished_at"])
    assert run["duration_seconds"] == pytest.approx(
        (when(run["finished_at"]) - when(run["started_at"])).total_seconds()
    )
    join_started = when(run["nodes"]["join"]["started_at"])
    assert join_started >= when(run["nodes"]["say_hello"]["finished_at"])
    assert join_started >= when(run["nodes"]["add_up"]["finished_at"])


def test_a_node_failing_every_attempt_fails_the_run_and_skips_its_downstream(
    client: httpx.Client,
) -> None:
    workflow_id = define(
        client,
        {
            "flaky": {
                "type": "fail",
                "config": {"message": "upstream API returned 500"},
                "retries": 1,
                "retry_delay_seconds": 1,
            },
            "after_flaky": {"type": "noop"},
            "after_that": {"type": "noop"},
            "independent": {"type": "sleep", "config": {"seconds": 0.2}},
        },
        {"after_flaky": ["flaky"], "after_that": ["after_flaky"]},
    )
    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    nodes = run["nodes"]
    assert run["status"] == "failed", run
    assert run["error"] == "1 node(s) failed"
    assert nodes["flaky"]["status"] == "failed"
    assert nodes["flaky"]["attempts"] == 2
    assert nodes["flaky"]["max_attempts"] == 2
    assert nodes["flaky"]["error"] == "upstream API returned 500"
    for skipped in ("after_flaky", "after_that"):
        assert nodes[skipped]["status"] == "skipped", nodes[skipped]
        assert nodes[skipped]["attempts"] == 0
        assert nodes[skipped]["started_at"] is None
        assert "flaky" in nodes[skipped]["error"]
    assert nodes["independent"]["status"] == "succeeded"
    assert nodes["independent"]["output"] == {"slept_seconds": 0.2}


def test_a_node_that_fails_once_succeeds_on_its_retry(client: httpx.Client) -> None:
    workflow_id = define(
        client,
        {
            "flaky": {"type": "fail", "config": {"times": 1}, "retries": 2},
            "after": {"type": "noop"},
        },
        {"after": ["flaky"]},
    )
    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    assert run["status"] == "succeeded", run
    flaky = run["nodes"]["flaky"]
    assert flaky["status"] == "succeeded"
    assert flaky["attempts"] == 2
    assert flaky["max_attempts"] == 3
    assert flaky["error"] is None
    assert flaky["output"] == {"succeeded_on_attempt": 2}
    assert run["nodes"]["after"]["status"] == "succeeded"


def test_a_child_of_two_parents_starts_after_both_even_when_one_retries(
    client: httpx.Client,
) -> None:
    workflow_id = define(
        client,
        {
            "steady": {"type": "sleep", "config": {"seconds": 0.3}},
            "flaky": {
                "type": "fail",
                "config": {"times": 1},
                "retries": 1,
                "retry_delay_seconds": 1,
            },
            "child": {"type": "noop"},
            "grandchild": {"type": "noop"},
        },
        {"child": ["steady", "flaky"], "grandchild": ["child"]},
    )
    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    nodes = run["nodes"]
    assert run["status"] == "succeeded", run
    assert nodes["flaky"]["attempts"] == 2
    child_started = when(nodes["child"]["started_at"])
    assert child_started >= when(nodes["steady"]["finished_at"])
    assert child_started >= when(nodes["flaky"]["finished_at"])
    assert when(nodes["grandchild"]["started_at"]) >= when(nodes["child"]["finished_at"])
    assert nodes["child"]["attempts"] == 1


def test_a_wide_level_runs_every_node_once(client: httpx.Client) -> None:
    nodes: dict[str, Any] = {f"n{i}": {"type": "noop"} for i in range(12)}
    nodes["sink"] = {"type": "noop"}
    workflow_id = define(client, nodes, {"sink": [f"n{i}" for i in range(12)]})
    run = wait_for_run(client, start(client, workflow_id)["job_run_id"])
    assert run["status"] == "succeeded", run
    assert {node["attempts"] for node in run["nodes"].values()} == {1}
    sink_started = when(run["nodes"]["sink"]["started_at"])
    assert all(sink_started >= when(run["nodes"][f"n{i}"]["finished_at"]) for i in range(12))


def test_a_chain_of_twenty_levels_runs_in_order(client: httpx.Client) -> None:
    nodes = {f"n{i:02d}": {"type": "noop"} for i in range(20)}
    dependencies = {f"n{i:02d}": [f"n{i - 1:02d}"] for i in range(1, 20)}
    run = wait_for_run(client, start(client, define(client, nodes, dependencies))["job_run_id"])
    assert run["status"] == "succeeded", run
    for i in range(1, 20):
        child, parent = run["nodes"][f"n{i:02d}"], run["nodes"][f"n{i - 1:02d}"]
        assert when(child["started_at"]) >= when(parent["finished_at"]), i


def test_a_run_keeps_the_plan_it_started_with(client: httpx.Client) -> None:
    workflow_id = define(client, {"nap": {"type": "sleep", "config": {"seconds": 0.5}}})
    job_run_id = start(client, workflow_id)["job_run_id"]
    replaced = client.put(
        f"/workflows/{workflow_id}",
        json={
            "workflow_id": workflow_id,
            "workspace_id": "ws1",
            "folder_id": "folder1",
            "nodes": {"other": {"type": "noop"}},
        },
    )
    assert replaced.status_code == 200, replaced.text
    run = wait_for_run(client, job_run_id)
    assert run["status"] == "succeeded", run
    assert set(run["nodes"]) == {"nap"}


def test_get_of_an_unknown_run_is_404_naming_it(client: httpx.Client) -> None:
    job_run_id = unique("nope")
    response = client.get(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 404
    assert job_run_id in response.json()["detail"]


def test_a_run_body_reports_its_identity(client: httpx.Client) -> None:
    workflow_id = define(client, {"a": {"type": "noop"}})
    job_run_id = start(client, workflow_id, job_id="nightly", from_job="upstream-job")["job_run_id"]
    run = get_run(client, job_run_id)
    assert (run["workflow_id"], run["job_id"], run["from_job"], run["backend"]) == (
        workflow_id,
        "nightly",
        "upstream-job",
        "rq",
    )
    assert (run["workspace_id"], run["folder_id"]) == ("ws1", "folder1")
    wait_for_run(client, job_run_id)


def test_a_retry_waits_at_least_retry_delay_seconds(client: httpx.Client) -> None:
    delay = 0.4  # under a second, which RQ cannot schedule by itself
    workflow_id = define(
        client,
        {"flaky": {"type": "fail", "retries": 1, "retry_delay_seconds": delay}},
    )
    job_run_id = start(client, workflow_id)["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "failed"
    # A fail node fails at once: its traceback line marks the end of attempt 1 and
    # (a little after) the start of attempt 2.
    failures = {
        line["attempt"]: when(line["time"])
        for line in log_lines(client, job_run_id)
        if line["level"] == "ERROR"
    }
    assert set(failures) == {1, 2}
    waited = (failures[2] - failures[1]).total_seconds()
    assert waited >= delay, f"attempt 2 started {waited:.3f} s after attempt 1 failed"
