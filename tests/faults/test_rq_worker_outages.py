"""RQ workers ride out Redis outages and restarts, and a killed one comes back under its name.

Issue 13, defects 1 and 6: busy workers quit within a second of Redis going
away and nothing restarted them; after a Redis restart live workers were
missing from ``rq:workers``; a SIGKILLed worker could not start again under its
name for a while, and its scheduler child lived on.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker

from tests.faults.conftest import WORKERS
from tests.support.faults import (
    OwnRedis,
    chain,
    execution_problems,
    start_runs,
    wait_executing,
    wait_running,
)
from tests.support.figway_stack import Stack
from tests.support.processes import descendants, process_alive

pytestmark = pytest.mark.service

#: Generous: the bound itself (silence + 2 reconcile rounds after the fault) is measured
#: by `make bench-faults`; a test only asserts that every run ends by itself.
SETTLE_SECONDS = 90


def registered(redis_url: str) -> set[str]:
    with Redis.from_url(redis_url) as redis:
        return {w.name for w in Worker.all(connection=redis)}


def wait_registered(stack: Stack, names: set[str], *, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not names <= registered(stack.redis_url):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"workers {sorted(names)} not in rq:workers after {timeout:.0f} s: "
                f"{sorted(registered(stack.redis_url))}\n{stack.logs()}"
            )
        time.sleep(0.2)


def test_busy_workers_ride_out_a_redis_restart_and_register_again(
    stack: Stack, own_redis: OwnRedis, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (3.0, 0.5))
    stack.put_workflow("outage_chain", nodes, dependencies)
    limited, _ = chain(ledger, (3.0, 0.5), limits={"memory_mb": 256, "cpu_seconds": 30})
    stack.put_workflow("outage_limited", limited, dependencies)
    pids = {name: stack.workers[name].pid for name in WORKERS}
    # A node held to limits runs in a process forked from its horse: it rides out too.
    ids = start_runs(stack, "outage_limited", 2) + start_runs(stack, "outage_chain", 4)
    wait_running(stack, ids, at_least=2)

    with own_redis.outage(5):
        pass  # both workers are busy: their horses run on while Redis is away

    runs = stack.wait_for_all(ids, timeout=SETTLE_SECONDS)
    assert {run["status"] for run in runs.values()} == {"succeeded"}, runs
    assert execution_problems(runs, ledger) == []
    for name, pid in pids.items():
        assert stack.workers[name].running(), f"{name} exited\n{stack.logs()}"
        assert stack.workers[name].pid == pid
    wait_registered(stack, set(WORKERS))


def test_idle_workers_ride_out_a_redis_outage_and_take_new_runs(
    stack: Stack, own_redis: OwnRedis, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (0.2, 0.2))
    stack.put_workflow("idle_chain", nodes, dependencies)

    with own_redis.outage(3):
        pass

    wait_registered(stack, set(WORKERS))
    ids = start_runs(stack, "idle_chain", 4)
    runs = stack.wait_for_all(ids, timeout=SETTLE_SECONDS)
    assert {run["status"] for run in runs.values()} == {"succeeded"}, runs
    assert all(stack.workers[name].running() for name in WORKERS), stack.logs()


def test_a_killed_worker_starts_again_at_once_under_its_name(stack: Stack, ledger: Path) -> None:
    name = WORKERS[0]
    # No child runs beside an idle worker (once its last horse has ended): RQ's scheduler
    # is a thread of figway's worker, so nothing can be orphaned when it is killed.
    deadline = time.monotonic() + 30
    while descendants(stack.workers[name].pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert descendants(stack.workers[name].pid) == []
    nodes, dependencies = chain(ledger, (4.0, 0.2))
    stack.put_workflow("killed_chain", nodes, dependencies)
    ids = start_runs(stack, "killed_chain", 2)
    wait_executing(ledger, ids, at_least=2)  # both workers are busy, one with each run

    victim = stack.workers[name]
    family = [victim.pid, *descendants(victim.pid)]
    victim.kill_everything()
    stack.start_workers(name)  # refused for a minute before: "an active worker named ..."

    runs = stack.wait_for_all(ids, timeout=SETTLE_SECONDS)
    assert {run["status"] for run in runs.values()} == {"succeeded"}, runs
    # The killed attempt is retried, and counted: one execution per recorded attempt.
    assert sorted(run["nodes"]["n0"]["attempts"] for run in runs.values()) == [1, 2]
    assert execution_problems(runs, ledger) == []
    assert [pid for pid in family if process_alive(pid)] == []


def test_a_killed_worker_fails_a_node_with_no_retry_left_saying_why(
    stack: Stack, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (30.0, 0.2), retries=0)
    stack.put_workflow("killed_once", nodes, dependencies)
    [job_run_id] = start_runs(stack, "killed_once", 1)
    wait_executing(ledger, [job_run_id], at_least=1)
    # The worker whose work horse runs the node (a horse is the only child a worker has).
    holder = next(w for w in WORKERS if descendants(stack.workers[w].pid))
    stack.workers[holder].kill_everything()
    stack.start_workers(holder)

    run = stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    assert run["status"] == "failed"
    error = run["nodes"]["n0"]["error"]
    assert "worker lost during attempt 1" in error
    assert f"its worker {holder}" in error
    assert "was gone when a worker of that name started" in error
    assert run["nodes"]["n1"]["status"] == "skipped"
    assert run["nodes"]["n1"]["error"] == "upstream node 'n0' failed"
    assert execution_problems({job_run_id: run}, ledger) == []


def test_a_worker_started_while_redis_is_away_waits_for_it(
    stack: Stack, own_redis: OwnRedis
) -> None:
    own_redis.stop()
    try:
        late = stack.launch_worker("fault-worker-late")
        time.sleep(3)  # long enough for a worker that gives up to have exited
        assert late.running(), late.tail()
    finally:
        own_redis.start()
    try:
        wait_registered(stack, {"fault-worker-late"})
    finally:
        late.kill_everything()
        del stack.workers["fault-worker-late"]
