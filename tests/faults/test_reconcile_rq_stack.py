"""Through a real gateway and workers: runs Redis lost, runs left pending, kills refused.

Issue 13, defects 2, 4 and 6: a run no backend took stayed ``pending`` forever;
a Redis that came back empty stranded every run in flight; a DELETE during a
Redis outage answered 503 but had already moved the run to ``cancelling``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import WORKERS
from tests.support.faults import OwnRedis, chain, execution_problems, start_runs, wait_running
from tests.support.figway_stack import Stack

pytestmark = pytest.mark.service

SETTLE_SECONDS = 90


def test_runs_in_flight_when_redis_lost_its_data_are_finished_from_the_record(
    stack: Stack, own_redis: OwnRedis, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (2.0, 0.3, 0.3))
    stack.put_workflow("wiped_chain", nodes, dependencies)
    ids = start_runs(stack, "wiped_chain", 6)
    wait_running(stack, ids, at_least=2)

    with own_redis.outage(2, lose_data=True):
        pass  # killed, its files gone: it comes back empty

    runs = stack.wait_for_all(ids, timeout=SETTLE_SECONDS)
    assert {run["status"] for run in runs.values()} == {"succeeded"}, runs
    assert execution_problems(runs, ledger) == []


def test_a_run_refused_during_an_outage_is_submitted_without_the_client(
    stack: Stack, own_redis: OwnRedis, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (0.2,))
    stack.put_workflow("refused_single", nodes, dependencies)
    own_redis.stop()
    try:
        response = stack.http.post(
            "/workflow_runs/", json=stack.run_body("refused_single", "refused-run")
        )
        assert response.status_code in (202, 503), response.text
        assert stack.get_run("refused-run")["status"] == "pending"
    finally:
        own_redis.start()

    # Nobody repeats the request: the reconciler submits it once the claim has expired.
    run = stack.wait_for_end("refused-run", timeout=SETTLE_SECONDS)
    assert run["status"] == "succeeded", run
    assert run["error"] is None


def test_a_delete_that_answers_503_changes_nothing(
    stack: Stack, own_redis: OwnRedis, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (30.0,))
    stack.put_workflow("undeletable", nodes, dependencies)
    [job_run_id] = start_runs(stack, "undeletable", 1)
    wait_running(stack, [job_run_id], at_least=1)
    before = stack.get_run(job_run_id)

    own_redis.stop()
    try:
        response = stack.http.delete(f"/workflow_runs/{job_run_id}")
        assert response.status_code == 503, response.text
        after = stack.get_run(job_run_id)
        assert after["status"] == before["status"] == "running"
        assert after["nodes"]["n0"]["status"] == "running"
    finally:
        own_redis.start()

    response = stack.http.delete(f"/workflow_runs/{job_run_id}")
    assert response.status_code == 200, response.text
    run = stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    assert run["status"] == "cancelled", run


def test_readyz_is_not_ready_while_a_queue_with_work_has_no_live_worker(
    stack: Stack, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (0.1,))
    stack.put_workflow("unserved_single", nodes, dependencies)
    for name in WORKERS:
        stack.workers[name].stop()  # SIGTERM: each records its death in Redis
    try:
        assert stack.http.get("/readyz").status_code == 200  # no work waiting: ready
        [job_run_id] = start_runs(stack, "unserved_single", 1)
        answer = stack.http.get("/readyz")
        assert answer.status_code == 503, answer.text
        assert answer.json()["checks"]["rq"]["reason"] == "no_worker"
    finally:
        stack.start_workers(*WORKERS)
    assert stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)["status"] == "succeeded"
    assert stack.http.get("/readyz").status_code == 200
