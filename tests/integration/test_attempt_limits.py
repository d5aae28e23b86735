"""Resource limits per node attempt on real workers: a node over its memory or CPU time
limit fails with the reason, obeys its retries, and the worker lives on to run the next
nodes. On a real `figway worker rq` (the node runs in a process forked from its work
horse) and in the real Prefect worker's flow-run process.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.figway_stack import Stack
from tests.support.hogs import hog

pytestmark = pytest.mark.service

MEMORY_REASON = "memory limit 64 MiB exceeded"
CPU_REASON = "CPU time limit 1 s exceeded"


#: Two nodes over their limits (one with a retry), one within them, one without any.
NODES = {
    "big": {**hog("allocate", {"memory_mb": 64}, megabytes=512), "retries": 1},
    "hot": hog("burn", {"cpu_seconds": 1}, seconds=60),
    "small": hog("allocate", {"memory_mb": 256, "cpu_seconds": 30}, megabytes=16),
    "after": hog("allocate", None, megabytes=1),
}


def check_outcomes(run: dict[str, Any], explain: str) -> None:
    nodes = run["nodes"]
    assert run["status"] == "failed", explain
    assert (nodes["big"]["status"], nodes["big"]["error"]) == ("failed", MEMORY_REASON), explain
    assert nodes["big"]["attempts"] == 2, explain  # its retry ran, and went over again
    assert (nodes["hot"]["status"], nodes["hot"]["error"]) == ("failed", CPU_REASON), explain
    assert nodes["small"]["status"] == "succeeded", explain
    assert nodes["small"]["output"] == {"held_mb": 16}
    assert nodes["after"]["status"] == "succeeded", explain


def test_an_rq_worker_fails_nodes_over_their_limits_and_goes_on(stack: Stack) -> None:
    stack.start_workers("limits-worker")
    worker = stack.workers["limits-worker"]
    stack.put_workflow("limits-rq", NODES, {"after": ["small"]})
    job_run_id = stack.start_run("limits-rq", "limits-rq-1")["job_run_id"]
    check_outcomes(stack.wait_for_end(job_run_id, timeout=120), stack.explain(job_run_id))
    # The same worker process, still alive, takes the next run.
    stack.put_workflow("within-rq", {"small": NODES["small"]})
    again = stack.wait_for_end(stack.start_run("within-rq", "within-rq-1")["job_run_id"])
    assert again["status"] == "succeeded", stack.explain(again["job_run_id"])
    assert worker.running()
    assert stack.workers == {"limits-worker": worker}


def test_a_prefect_flow_run_fails_nodes_over_their_limits_and_goes_on(
    prefect_gateway: Stack,
) -> None:
    stack = prefect_gateway
    stack.put_workflow("limits-prefect", NODES, {"after": ["small"]}, backend="prefect")
    job_run_id = stack.start_run("limits-prefect", "limits-prefect-1")["job_run_id"]
    check_outcomes(stack.wait_for_end(job_run_id, timeout=180), stack.explain(job_run_id))
