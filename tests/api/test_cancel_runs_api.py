"""DELETE /workflow_runs/{id}: killing a run on the backend that owns it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import pytest

from tests.support.api_client import (
    EMBEDDED_WORKERS,
    HEARTBEAT_SECONDS,
    define,
    get_run,
    start,
    unique,
    wait_for,
    wait_for_run,
)


@pytest.fixture
def long_run(client: httpx.Client) -> str:
    """A started run whose first node sleeps 60 s, with two nodes waiting behind it."""
    workflow_id = define(
        client,
        {
            "nap": {"type": "sleep", "config": {"seconds": 60}},
            "after": {"type": "noop"},
            "last": {"type": "noop"},
        },
        {"after": ["nap"], "last": ["after"]},
    )
    job_run_id: str = start(client, workflow_id)["job_run_id"]
    wait_for(
        lambda: get_run(client, job_run_id),
        lambda run: run["nodes"]["nap"]["status"] == "running",
        "the 60 s sleep node starting",
    )
    return job_run_id


def status_of(client: httpx.Client, job_run_id: str) -> str:
    status: str = get_run(client, job_run_id)["status"]
    return status


def attempts(run: dict[str, Any]) -> dict[str, int]:
    return {node_id: node["attempts"] for node_id, node in run["nodes"].items()}


@pytest.mark.timeout(60)
def test_delete_kills_a_running_run(client: httpx.Client, long_run: str) -> None:
    response = client.delete(f"/workflow_runs/{long_run}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"cancelling", "cancelled"}

    run = wait_for_run(client, long_run, frozenset({"cancelled"}))
    assert run["finished_at"] is not None
    assert {node["status"] for node in run["nodes"].values()} == {"cancelled"}
    assert attempts(run) == {"nap": 1, "after": 0, "last": 0}

    # Give the stopped node's worker time to act on the kill (several heartbeats), then
    # check that nothing downstream was started by it and nothing else moved.
    time.sleep(HEARTBEAT_SECONDS * 5)
    later = get_run(client, long_run)
    assert later["status"] == "cancelled"
    assert attempts(later) == {"nap": 1, "after": 0, "last": 0}
    assert later["nodes"]["after"]["started_at"] is None
    assert later["nodes"]["nap"]["output"] is None


@pytest.mark.timeout(60)
def test_a_queued_run_and_busy_workers_are_killed(client: httpx.Client) -> None:
    # As many 60 s sleeps as there are workers: the next run waits in the queue. Killing
    # it must start none of its nodes; killing the sleepers must free the workers, or
    # the run started afterwards could never begin.
    workflow_id = define(client, {"nap": {"type": "sleep", "config": {"seconds": 60}}})
    sleepers = [start(client, workflow_id)["job_run_id"] for _ in range(EMBEDDED_WORKERS)]
    for job_run_id in sleepers:
        wait_for(
            partial(status_of, client, job_run_id),
            lambda status: status == "running",
            f"sleeper {job_run_id} starting",
        )
    waiting = define(client, {"a": {"type": "noop"}, "b": {"type": "noop"}}, {"b": ["a"]})
    queued = start(client, waiting)["job_run_id"]
    assert get_run(client, queued)["status"] == "queued"
    killed = client.delete(f"/workflow_runs/{queued}")
    assert killed.status_code == 200, killed.text
    assert wait_for_run(client, queued)["status"] == "cancelled"

    for job_run_id in sleepers:
        assert client.delete(f"/workflow_runs/{job_run_id}").status_code == 200
    run = wait_for_run(client, start(client, waiting)["job_run_id"])
    assert run["status"] == "succeeded"
    assert attempts(get_run(client, queued)) == {"a": 0, "b": 0}
    for job_run_id in sleepers:
        assert wait_for_run(client, job_run_id)["status"] == "cancelled"


@pytest.mark.timeout(60)
def test_concurrent_deletes_kill_the_run_once(client: httpx.Client, long_run: str) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: client.delete(f"/workflow_runs/{long_run}"), range(5)))
    codes = [response.status_code for response in responses]
    assert 200 in codes, [r.text for r in responses]
    assert set(codes) <= {200, 409}, [r.text for r in responses]
    run = wait_for_run(client, long_run, frozenset({"cancelled"}))
    assert attempts(run) == {"nap": 1, "after": 0, "last": 0}


@pytest.mark.timeout(60)
def test_a_node_waiting_for_its_retry_is_killed(client: httpx.Client) -> None:
    delay = 2
    workflow_id = define(
        client,
        {
            "flaky": {
                "type": "fail",
                "config": {"times": 1},
                "retries": 1,
                "retry_delay_seconds": delay,
            },
            "after": {"type": "noop"},
        },
        {"after": ["flaky"]},
    )
    job_run_id = start(client, workflow_id)["job_run_id"]
    wait_for(
        lambda: get_run(client, job_run_id)["nodes"]["flaky"]["status"],
        lambda status: status == "retrying",
        "the first attempt failing",
    )
    assert client.delete(f"/workflow_runs/{job_run_id}").status_code == 200
    run = wait_for_run(client, job_run_id)
    assert run["status"] == "cancelled"
    assert attempts(run) == {"flaky": 1, "after": 0}
    # Past the moment the retry was due: it must not have run.
    time.sleep(delay + 1)
    later = get_run(client, job_run_id)
    assert attempts(later) == {"flaky": 1, "after": 0}
    assert {node["status"] for node in later["nodes"].values()} == {"cancelled"}


@pytest.mark.timeout(60)
def test_delete_twice_is_a_conflict_naming_the_status(client: httpx.Client, long_run: str) -> None:
    assert client.delete(f"/workflow_runs/{long_run}").status_code == 200
    wait_for_run(client, long_run, frozenset({"cancelled"}))
    again = client.delete(f"/workflow_runs/{long_run}")
    assert again.status_code == 409, again.text
    assert "cancelled" in again.json()["detail"]
    assert get_run(client, long_run)["status"] == "cancelled"


def test_delete_of_a_finished_run_is_a_conflict_naming_succeeded(client: httpx.Client) -> None:
    workflow_id = define(client, {"a": {"type": "noop"}})
    job_run_id = start(client, workflow_id)["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "succeeded"
    response = client.delete(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 409, response.text
    assert "succeeded" in response.json()["detail"]
    assert get_run(client, job_run_id)["status"] == "succeeded"


def test_delete_of_a_failed_run_is_a_conflict_naming_failed(client: httpx.Client) -> None:
    workflow_id = define(client, {"a": {"type": "fail"}})
    job_run_id = start(client, workflow_id)["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "failed"
    response = client.delete(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 409, response.text
    assert "failed" in response.json()["detail"]


def test_delete_of_an_unknown_run_is_404_naming_it(client: httpx.Client) -> None:
    job_run_id = unique("nope")
    response = client.delete(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 404, response.text
    assert job_run_id in response.json()["detail"]


@pytest.mark.timeout(60)
def test_a_repeated_post_of_a_killed_run_starts_nothing(
    client: httpx.Client, long_run: str
) -> None:
    run = get_run(client, long_run)
    assert client.delete(f"/workflow_runs/{long_run}").status_code == 200
    wait_for_run(client, long_run, frozenset({"cancelled"}))
    repeat = client.post(
        "/workflow_runs/",
        json={
            "workspace_id": run["workspace_id"],
            "folder_id": run["folder_id"],
            "job_id": run["job_id"],
            "workflow_id": run["workflow_id"],
            "job_run_id": long_run,
        },
    )
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["status"] == "cancelled"
    assert attempts(get_run(client, long_run)) == {"nap": 1, "after": 0, "last": 0}
