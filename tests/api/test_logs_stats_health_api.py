"""GET /workflow_runs/stats, GET /workflow_runs/{id}/logs, /healthz and /readyz."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api_client import (
    EMBEDDED_WORKERS,
    Gateway,
    define,
    start,
    unique,
    wait_for,
    wait_for_run,
)

ACTIVE = ("pending", "queued", "running", "cancelling")
RUN_STATUSES = {"pending", "queued", "running", "succeeded", "failed", "cancelling", "cancelled"}


def stats(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/workflow_runs/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled_stats(client: httpx.Client) -> dict[str, Any]:
    """Stats once no run of an earlier test is still moving."""
    body: dict[str, Any] = wait_for(
        lambda: stats(client),
        lambda body: all(body["by_status"][status] == 0 for status in ACTIVE),
        "every earlier run finishing",
    )
    return body


def logs(client: httpx.Client, job_run_id: str, **params: int) -> dict[str, Any]:
    response = client.get(f"/workflow_runs/{job_run_id}/logs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_stats_count_runs_by_status_backend_and_workflow(client: httpx.Client) -> None:
    good = define(client, {"a": {"type": "noop"}}, prefix="good")
    bad = define(client, {"a": {"type": "fail"}}, prefix="bad")
    before = settled_stats(client)
    assert set(before) == {"total", "by_status", "by_backend", "by_workflow"}
    assert set(before["by_status"]) == RUN_STATUSES
    assert good not in before["by_workflow"]

    runs = [start(client, good), start(client, good), start(client, bad)]
    for run in runs:
        wait_for_run(client, run["job_run_id"])

    after = stats(client)
    assert after["total"] == before["total"] + 3
    assert after["by_status"]["succeeded"] == before["by_status"]["succeeded"] + 2
    assert after["by_status"]["failed"] == before["by_status"]["failed"] + 1
    unchanged = RUN_STATUSES - {"succeeded", "failed"}
    assert {s: after["by_status"][s] for s in unchanged} == {
        s: before["by_status"][s] for s in unchanged
    }
    assert after["by_backend"]["rq"] == before["by_backend"].get("rq", 0) + 3
    assert set(after["by_backend"]) <= {"rq", "prefect"}
    assert after["by_workflow"][good] == {"total": 2, "succeeded": 2}
    assert after["by_workflow"][bad] == {"total": 1, "failed": 1}
    assert after["total"] == sum(after["by_status"].values())
    assert after["total"] == sum(after["by_backend"].values())
    assert after["total"] == sum(w["total"] for w in after["by_workflow"].values())


def test_logs_carry_time_level_node_attempt_and_message(client: httpx.Client) -> None:
    marker = unique("printed")
    workflow_id = define(
        client,
        {
            "talk": {
                "type": "python",
                "config": {"callable": "builtins:print", "kwargs": {"end": f"{marker}\n"}},
            }
        },
    )
    job_run_id = start(client, workflow_id)["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "succeeded"

    body = logs(client, job_run_id)
    assert body["job_run_id"] == job_run_id
    printed = [line for line in body["lines"] if line["message"] == marker]
    assert len(printed) == 1, body
    line = printed[0]
    assert set(line) == {"id", "time", "level", "node", "attempt", "message"}
    assert (line["level"], line["node"], line["attempt"]) == ("INFO", "talk", 1)
    assert line["time"].endswith(("Z", "+00:00"))
    assert body["next_after"] == body["lines"][-1]["id"]


def test_a_failure_traceback_is_logged_with_its_attempt(client: httpx.Client) -> None:
    workflow_id = define(
        client,
        {"flaky": {"type": "fail", "config": {"message": "disk on fire"}, "retries": 1}},
    )
    job_run_id = start(client, workflow_id)["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "failed"

    errors = [line for line in logs(client, job_run_id)["lines"] if line["level"] == "ERROR"]
    assert [line["attempt"] for line in errors] == [1, 2]
    for line in errors:
        assert line["node"] == "flaky"
        assert line["message"].startswith("Traceback (most recent call last)")
        assert "NodeFailedError: disk on fire" in line["message"]


def test_logs_page_with_after(client: httpx.Client) -> None:
    nodes = {
        f"p{i}": {
            "type": "python",
            "config": {"callable": "builtins:print", "kwargs": {"end": f"line {i}\n"}},
        }
        for i in range(4)
    }
    job_run_id = start(client, define(client, nodes))["job_run_id"]
    assert wait_for_run(client, job_run_id)["status"] == "succeeded"
    everything = logs(client, job_run_id)["lines"]
    assert sorted(line["message"] for line in everything) == [f"line {i}" for i in range(4)]
    ids = [line["id"] for line in everything]
    assert ids == sorted(set(ids))

    assert all(line["node"] == f"p{line['message'][-1]}" for line in everything)

    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = logs(client, job_run_id, after=after, limit=1)
        if not page["lines"]:
            assert page["next_after"] == after
            break
        assert len(page["lines"]) == 1
        paged.extend(page["lines"])
        after = page["next_after"]
    assert paged == everything
    assert logs(client, job_run_id, after=ids[1])["lines"] == everything[2:]


def test_logs_of_an_unknown_run_are_404(client: httpx.Client) -> None:
    job_run_id = unique("nope")
    response = client.get(f"/workflow_runs/{job_run_id}/logs")
    assert response.status_code == 404
    assert job_run_id in response.json()["detail"]


def test_bad_paging_parameters_are_refused_naming_them(client: httpx.Client) -> None:
    job_run_id = start(client, define(client, {"a": {"type": "noop"}}))["job_run_id"]
    for params, field in (
        ({"after": -1}, "after"),
        ({"limit": 0}, "limit"),
        ({"after": "x"}, "after"),
    ):
        response = client.get(f"/workflow_runs/{job_run_id}/logs", params=params)
        assert response.status_code == 422, response.text
        assert field in {error["field"] for error in response.json()["errors"]}
    wait_for_run(client, job_run_id)


@pytest.mark.parametrize("after", [2**63, 10**20])
def test_an_after_beyond_any_line_id_is_not_a_server_error(
    client: httpx.Client, gateway: Gateway, after: int
) -> None:
    job_run_id = start(client, define(client, {"a": {"type": "noop"}}))["job_run_id"]
    wait_for_run(client, job_run_id)
    # A client of its own: on the shared one this 500 would also fail the teardown,
    # and this test reports it itself.
    with httpx.Client(base_url=gateway.base_url, timeout=30) as unhooked:
        response = unhooked.get(f"/workflow_runs/{job_run_id}/logs", params={"after": after})
    if response.status_code >= 500:
        # No traceback: on Python 3.11 rendering one here races the server thread that is
        # logging its own (CPython gh-106905) and can crash pytest itself.
        pytest.fail(f"the gateway answered {response.status_code}", pytrace=False)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["lines"] == []
    else:
        assert "after" in {error["field"] for error in response.json()["errors"]}


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_rq(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["up"] is True
    assert body["checks"]["rq"]["up"] is True
    assert body["checks"]["rq"]["workers"] == EMBEDDED_WORKERS


def test_an_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert response.json()["detail"]
