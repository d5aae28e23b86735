"""figway's Prefect backend in production shape, through HTTP: `figway serve`, a Prefect
server on PostgreSQL set up by `figway setup prefect`, and one `prefect worker start` on
the default pool, whose flow-run processes record into figway's database.

Prefect's own record is checked too (with Prefect's client): one flow run per figway
run, ending in the state that matches figway's outcome.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from tests.support.api_client import assert_started_once
from tests.support.prefect_services import (
    PrefectServices,
    cli_json,
    process_alive,
    setup_lines,
)
from tests.support.prefect_stack import PrefectStack

pytestmark = pytest.mark.service

#: How long a Prefect run may take here: a worker poll, a flow-run process start, the nodes.
RUN_TIMEOUT = 90.0
#: How long Prefect may take to bring a flow run to its final state after figway's outcome.
FLOW_RUN_TIMEOUT = 60.0

POOL_LIMITS = {"default-worker-pool": 10, "postgres-worker-pool": 5, "priority-worker-pool": 3}
DEPLOYMENT_POOLS = {
    "figway-default": "default-worker-pool",
    "figway-postgres": "postgres-worker-pool",
    "figway-priority": "priority-worker-pool",
}


@pytest.fixture
def stack(prefect_gateway: PrefectStack) -> PrefectStack:
    return prefect_gateway


def new_run_id() -> str:
    return f"pf-{uuid.uuid4().hex[:12]}"


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {node: view["status"] for node, view in run["nodes"].items()}


def never_started(node: dict[str, Any]) -> bool:
    return node["started_at"] is None and node["attempts"] == 0


def wait_gone(pid: int, what: str, stack: PrefectStack, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} (pid {pid}) still runs after {timeout:.0f} s\n{stack.logs()}"
            )
        time.sleep(0.1)


def the_flow_run_process(stack: PrefectStack, job_run_id: str) -> int:
    """The pid of the one `python -m prefect.engine` process the worker runs now."""
    deadline = time.monotonic() + 15
    while len(pids := stack.services.engine_processes()) != 1:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not exactly one flow-run process under the worker: {pids}\n"
                f"{stack.explain(job_run_id)}"
            )
        time.sleep(0.1)
    return pids[0]


# -- setting Prefect up ------------------------------------------------------------------------


def test_setup_prefect_twice_changes_nothing_the_second_time(
    prefect_services: PrefectServices,
) -> None:
    expected_subjects = {f"work pool {pool}" for pool in POOL_LIMITS} | {
        f"deployment figway-run/{name}" for name in DEPLOYMENT_POOLS
    }
    # The session's first `figway setup prefect` ran on an empty server.
    first = setup_lines(prefect_services.first_setup_output)
    assert first == dict.fromkeys(expected_subjects, "created"), prefect_services.first_setup_output

    again = prefect_services.cli("figway", "setup", "prefect")

    assert again.returncode == 0, f"{again.stdout}{again.stderr}"
    assert setup_lines(again.stdout) == dict.fromkeys(expected_subjects, "unchanged"), again.stdout
    assert len(again.stdout.splitlines()) == len(expected_subjects), again.stdout
    pools = cli_json(prefect_services.cli("prefect", "work-pool", "ls", "--output", "json"))
    assert {p["name"]: (p["type"], p["concurrency_limit"]) for p in pools} == {
        name: ("process", limit) for name, limit in POOL_LIMITS.items()
    }, pools
    deployments = cli_json(prefect_services.cli("prefect", "deployment", "ls", "--output", "json"))
    assert {d["name"]: d["work_pool_name"] for d in deployments} == DEPLOYMENT_POOLS, deployments
    assert {d["entrypoint"] for d in deployments} == {"backends.prefect.flow.figway_run"}


# -- runs ----------------------------------------------------------------------------------------

DIAMOND = {
    "nodes": {
        "extract_orders": {"type": "sleep", "config": {"seconds": 0.3}},
        "extract_users": {
            "type": "python",
            "config": {"callable": "json:loads", "kwargs": {"s": "[1, 2]"}},
        },
        "transform": {"type": "noop"},
        "load": {"type": "sleep", "config": {"seconds": 0.1}},
    },
    "dependencies": {"transform": ["extract_orders", "extract_users"], "load": ["transform"]},
}


def test_a_prefect_run_succeeds_and_ten_identical_posts_make_one_flow_run(
    stack: PrefectStack,
) -> None:
    stack.put_workflow("pf_diamond", DIAMOND["nodes"], DIAMOND["dependencies"], backend="prefect")
    job_run_id = new_run_id()
    body = stack.run_body("pf_diamond", job_run_id)
    responses = stack.post_at_once(body, 10)

    assert_started_once(responses)
    assert {r.json()["job_run_id"] for r in responses} == {job_run_id}
    run = stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)
    context = stack.explain(job_run_id)
    assert run["status"] == "succeeded", context
    assert run["backend"] == "prefect", context
    assert statuses(run) == dict.fromkeys(DIAMOND["nodes"], "succeeded"), context
    assert {n: v["attempts"] for n, v in run["nodes"].items()} == dict.fromkeys(
        DIAMOND["nodes"], 1
    ), context
    assert run["nodes"]["extract_users"]["output"] == [1, 2], context
    assert run["nodes"]["load"]["output"] == {"slept_seconds": 0.1}, context
    assert stack.get_run(job_run_id)["backend"] == "prefect"
    stats = stack.http.get("/workflow_runs/stats").json()
    assert (stats["total"], stats["by_backend"]) == (1, {"prefect": 1}), stats
    flow_runs = stack.services.flow_runs(job_run_id)
    assert len(flow_runs) == 1, f"{len(flow_runs)} Prefect flow runs for one figway run\n{context}"
    assert "figway" in flow_runs[0].tags, flow_runs[0].tags
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.COMPLETED, timeout=FLOW_RUN_TIMEOUT, context=stack.logs
    )


def test_a_failing_node_fails_the_run_and_its_flow_run(stack: PrefectStack) -> None:
    nodes = {
        "broken": {"type": "fail", "config": {"message": "the source is gone"}},
        "after_broken": {"type": "noop"},
        "independent": {"type": "sleep", "config": {"seconds": 0.2}},
    }
    stack.put_workflow("pf_failing", nodes, {"after_broken": ["broken"]}, backend="prefect")
    job_run_id = new_run_id()
    stack.start_run("pf_failing", job_run_id)

    run = stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)

    context = stack.explain(job_run_id)
    assert run["status"] == "failed", context
    assert statuses(run) == {
        "broken": "failed",
        "after_broken": "skipped",
        "independent": "succeeded",
    }, context
    assert run["nodes"]["broken"]["attempts"] == 1, context
    assert "the source is gone" in (run["nodes"]["broken"]["error"] or ""), context
    assert never_started(run["nodes"]["after_broken"]), context
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.FAILED, timeout=FLOW_RUN_TIMEOUT, context=stack.logs
    )


# -- killing -------------------------------------------------------------------------------------

SLEEPER_CHAIN = {
    "nodes": {
        "sleeper": {"type": "sleep", "config": {"seconds": 60}},
        "after": {"type": "noop"},
        "far_after": {"type": "noop"},
    },
    "dependencies": {"after": ["sleeper"], "far_after": ["after"]},
}


def test_delete_cancels_a_running_run_and_its_flow_run(stack: PrefectStack) -> None:
    stack.put_workflow(
        "pf_sleeper", SLEEPER_CHAIN["nodes"], SLEEPER_CHAIN["dependencies"], backend="prefect"
    )
    job_run_id = new_run_id()
    stack.start_run("pf_sleeper", job_run_id)
    stack.wait_for(
        job_run_id,
        "the sleeper starting",
        lambda run: run["nodes"]["sleeper"]["status"] == "running",
        timeout=RUN_TIMEOUT,
    )
    process = the_flow_run_process(stack, job_run_id)

    response = stack.http.delete(f"/workflow_runs/{job_run_id}")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled", response.text
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.CANCELLED, timeout=FLOW_RUN_TIMEOUT, context=stack.logs
    )
    wait_gone(process, "the flow-run process of the cancelled run", stack)
    # Looked at only once the flow-run process is gone, so a late start would have shown.
    run = stack.get_run(job_run_id)
    context = stack.explain(job_run_id)
    assert run["status"] == "cancelled", context
    assert statuses(run) == dict.fromkeys(SLEEPER_CHAIN["nodes"], "cancelled"), context
    assert never_started(run["nodes"]["after"]), context
    assert never_started(run["nodes"]["far_after"]), context
    again = stack.http.delete(f"/workflow_runs/{job_run_id}")
    assert again.status_code == 409, again.text


def test_delete_cancels_a_run_still_waiting_for_a_worker(stack: PrefectStack) -> None:
    # Only the default pool has a worker: a run on the priority pool stays Scheduled.
    stack.put_workflow(
        "pf_waiting",
        {"only": {"type": "noop"}, "after": {"type": "noop"}},
        {"after": ["only"]},
        backend="prefect",
        pool="priority",
    )
    job_run_id = new_run_id()
    assert stack.start_run("pf_waiting", job_run_id)["status"] == "queued"
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.SCHEDULED, timeout=30, context=stack.logs
    )
    # Waiting for a worker is slow, not lost: past the node silence (3 s) and several
    # reconciler rounds (1 s), the run must still be queued.
    watch_until = time.monotonic() + 6
    while time.monotonic() < watch_until:
        assert stack.get_run(job_run_id)["status"] == "queued", stack.explain(job_run_id)
        time.sleep(0.5)

    response = stack.http.delete(f"/workflow_runs/{job_run_id}")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled", response.text
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.CANCELLED, timeout=FLOW_RUN_TIMEOUT, context=stack.logs
    )
    run = stack.get_run(job_run_id)
    context = stack.explain(job_run_id)
    assert statuses(run) == {"only": "cancelled", "after": "cancelled"}, context
    assert all(never_started(node) for node in run["nodes"].values()), context


def test_a_killed_flow_run_process_fails_the_run_and_crashes_its_flow_run(
    stack: PrefectStack,
) -> None:
    nodes = {"victim": {"type": "sleep", "config": {"seconds": 60}}, "after": {"type": "noop"}}
    stack.put_workflow("pf_victim", nodes, {"after": ["victim"]}, backend="prefect")
    job_run_id = new_run_id()
    stack.start_run("pf_victim", job_run_id)
    stack.wait_for(
        job_run_id,
        "the victim starting",
        lambda run: run["nodes"]["victim"]["status"] == "running",
        timeout=RUN_TIMEOUT,
    )

    os.kill(the_flow_run_process(stack, job_run_id), signal.SIGKILL)

    # Nobody reports the victim: the gateway's reconciler must find the run lost.
    run = stack.wait_for_end(job_run_id, timeout=60)
    context = stack.explain(job_run_id)
    assert run["status"] == "failed", context
    victim = run["nodes"]["victim"]
    assert (victim["status"], victim["attempts"]) == ("failed", 1), context
    assert victim["error"], context
    assert never_started(run["nodes"]["after"]), context
    # RQ skips the nodes below a lost node; a lost Prefect run fails every unfinished node
    # (store.abandon_run). Either way the node must have ended without running.
    assert run["nodes"]["after"]["status"] in ("skipped", "failed"), context
    stack.services.wait_for_flow_run_state(
        job_run_id, StateType.CRASHED, timeout=FLOW_RUN_TIMEOUT, context=stack.logs
    )


# -- logs ----------------------------------------------------------------------------------------


def test_what_a_python_node_prints_is_in_the_run_logs(stack: PrefectStack) -> None:
    talk = {
        "type": "python",
        "config": {"callable": "builtins:print", "kwargs": {"end": "hello from a prefect node\n"}},
    }
    stack.put_workflow("pf_talk", {"talk": talk}, backend="prefect")
    job_run_id = new_run_id()
    stack.start_run("pf_talk", job_run_id)

    run = stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)

    assert run["status"] == "succeeded", stack.explain(job_run_id)
    response = stack.http.get(f"/workflow_runs/{job_run_id}/logs")
    assert response.status_code == 200, response.text
    lines = [
        (line["node"], line["attempt"], line["level"], line["message"])
        for line in response.json()["lines"]
    ]
    assert ("talk", 1, "INFO", "hello from a prefect node") in lines, (
        f"log lines: {lines}\n{stack.explain(job_run_id)}"
    )
