"""figway in production shape, through HTTP: `figway serve`, `figway worker rq`, PostgreSQL, Redis.

These tests kill workers and work horses the way machines die, and check that
runs still end, each node ran as often as it should, and nothing waits forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry

from backends.rq.jobs import job_id_for
from backends.rq.serialization import JOB_SERIALIZER
from tests.support.api_client import assert_started_once
from tests.support.figway_stack import FIGWAY, Stack, clean_env
from tests.support.processes import free_port, process_alive

pytestmark = pytest.mark.service

# The same server tests/conftest.py administers; used here to make an un-migrated database.
PG_ADMIN_URL = os.environ.get(
    "FIGWAY_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

DIAMOND = {
    "nodes": {
        "extract_orders": {"type": "sleep", "config": {"seconds": 0.3}},
        "extract_users": {"type": "noop"},
        "transform": {"type": "noop"},
        "load": {"type": "sleep", "config": {"seconds": 0.1}},
    },
    "dependencies": {
        "transform": ["extract_orders", "extract_users"],
        "load": ["transform"],
    },
}


def new_run_id() -> str:
    return f"int-{uuid.uuid4().hex[:12]}"


def transitions(database_url: str, job_run_id: str) -> list[tuple[str, int, str, datetime]]:
    """The run's journal, oldest first: (node_id, attempt, status, at); run rows have node ''."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT node_id, attempt, status, at FROM transitions WHERE job_run_id = %s ORDER BY id",
            (job_run_id,),
        ).fetchall()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def starts_of(journal: list[tuple[str, int, str, datetime]], node_id: str) -> int:
    return sum(1 for node, _, status, _ in journal if node == node_id and status == "running")


def wait_gone(pid: int, what: str, stack: Stack, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} (pid {pid}) still runs after {timeout:.0f} s\n{stack.logs()}"
            )
        time.sleep(0.05)


def wait_job_status(stack: Stack, job_id: str, status: JobStatus, *, timeout: float = 30) -> None:
    """Poll RQ until the job has ``status`` (RQ records it a moment after the horse is reaped)."""
    deadline = time.monotonic() + timeout
    with Redis.from_url(stack.redis_url) as redis:
        while (
            current := Job.fetch(job_id, connection=redis, serializer=JOB_SERIALIZER).get_status()
        ) != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"RQ job {job_id} is {current}, not {status}\n{stack.logs()}")
            time.sleep(0.05)


# -- a run, once ---------------------------------------------------------------------------


def test_a_run_succeeds_and_ten_identical_posts_start_it_once(stack: Stack) -> None:
    stack.start_workers("w1", "w2")
    stack.put_workflow("diamond", DIAMOND["nodes"], DIAMOND["dependencies"])
    job_run_id = new_run_id()
    body = stack.run_body("diamond", job_run_id)
    responses = stack.post_at_once(body, 10)

    assert_started_once(responses)
    assert {r.json()["job_run_id"] for r in responses} == {job_run_id}
    run = stack.wait_for_end(job_run_id)
    context = stack.explain(job_run_id)
    assert run["status"] == "succeeded", context
    assert run["backend"] == "rq", context
    assert {n: v["status"] for n, v in run["nodes"].items()} == dict.fromkeys(
        DIAMOND["nodes"], "succeeded"
    ), context
    assert {n: v["attempts"] for n, v in run["nodes"].items()} == dict.fromkeys(
        DIAMOND["nodes"], 1
    ), context
    stats = stack.http.get("/workflow_runs/stats").json()
    assert stats["total"] == 1, stats
    journal = transitions(stack.database_url, job_run_id)
    assert {node: starts_of(journal, node) for node in DIAMOND["nodes"]} == dict.fromkeys(
        DIAMOND["nodes"], 1
    ), f"journal: {journal}"


def test_a_retry_with_a_delay_runs_on_the_workers_scheduler(stack: Stack) -> None:
    stack.start_workers("w1")
    flaky = {"type": "fail", "config": {"times": 1}, "retries": 1, "retry_delay_seconds": 2}
    stack.put_workflow(
        "delayed_retry", {"flaky": flaky, "after": {"type": "noop"}}, {"after": ["flaky"]}
    )
    job_run_id = new_run_id()
    stack.start_run("delayed_retry", job_run_id)

    run = stack.wait_for_end(job_run_id)

    context = stack.explain(job_run_id)
    assert run["status"] == "succeeded", context
    assert run["nodes"]["flaky"]["attempts"] == 2, context
    assert run["nodes"]["flaky"]["output"] == {"succeeded_on_attempt": 2}, context
    journal = {
        (node, attempt, status): at
        for node, attempt, status, at in transitions(stack.database_url, job_run_id)
    }
    gap = (journal[("flaky", 2, "running")] - journal[("flaky", 1, "retrying")]).total_seconds()
    # RQ schedules in whole seconds: a 2 s delay is never less than 1 s. A lower bound, so
    # this checks that the delay was honoured, not how fast anything ran.
    assert gap >= 1.0, f"attempt 2 started {gap:.2f} s after attempt 1 failed; journal: {journal}"


# -- killing ---------------------------------------------------------------------------------


SLEEPER_CHAIN = {
    "nodes": {
        "sleeper": {"type": "sleep", "config": {"seconds": 60}},
        "after": {"type": "noop"},
        "far_after": {"type": "noop"},
    },
    "dependencies": {"after": ["sleeper"], "far_after": ["after"]},
}


def test_delete_kills_the_run_and_its_work_horse(stack: Stack) -> None:
    # A node also stops itself when its heartbeat learns of the kill; beat rarely, so that
    # what stops this one is RQ's stop command killing the work horse.
    stack.settings["FIGWAY_HEARTBEAT_SECONDS"] = "30"
    stack.start_workers("w1")
    stack.put_workflow("sleeper_chain", SLEEPER_CHAIN["nodes"], SLEEPER_CHAIN["dependencies"])
    stack.put_workflow("quick", {"only": {"type": "noop"}})
    job_run_id = new_run_id()
    stack.start_run("sleeper_chain", job_run_id)
    stack.wait_for_node(job_run_id, "sleeper", "running")
    horse = stack.horse_of("w1")

    response = stack.http.delete(f"/workflow_runs/{job_run_id}")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled", response.text
    wait_gone(horse, "the work horse of the killed node", stack)
    wait_job_status(stack, job_id_for(job_run_id, "sleeper"), JobStatus.STOPPED)
    # The only worker is free again: a new run goes through it.
    quick_id = new_run_id()
    stack.start_run("quick", quick_id)
    assert stack.wait_for_end(quick_id)["status"] == "succeeded", stack.explain(quick_id)
    # Looked at only now, so that a late start downstream would have shown.
    run = stack.get_run(job_run_id)
    context = stack.explain(job_run_id)
    assert run["status"] == "cancelled", context
    assert {n: v["status"] for n, v in run["nodes"].items()} == dict.fromkeys(
        SLEEPER_CHAIN["nodes"], "cancelled"
    ), context
    journal = transitions(stack.database_url, job_run_id)
    assert starts_of(journal, "after") == 0, journal
    assert starts_of(journal, "far_after") == 0, journal
    again = stack.http.delete(f"/workflow_runs/{job_run_id}")
    assert again.status_code == 409, again.text


def test_a_killed_work_horse_is_retried(stack: Stack) -> None:
    stack.start_workers("w1")
    nodes = {
        "victim": {"type": "sleep", "config": {"seconds": 3}, "retries": 1},
        "after": {"type": "noop"},
    }
    stack.put_workflow("horse_kill", nodes, {"after": ["victim"]})
    job_run_id = new_run_id()
    stack.start_run("horse_kill", job_run_id)
    stack.wait_for_node(job_run_id, "victim", "running")

    os.kill(stack.horse_of("w1"), signal.SIGKILL)

    run = stack.wait_for_end(job_run_id)
    context = stack.explain(job_run_id)
    assert run["status"] == "succeeded", context
    assert run["nodes"]["victim"]["attempts"] == 2, context
    assert run["nodes"]["victim"]["output"] == {"slept_seconds": 3}, context
    assert run["nodes"]["after"]["status"] == "succeeded", context
    journal = transitions(stack.database_url, job_run_id)
    assert ("victim", 1, "retrying") in {(n, a, s) for n, a, s, _ in journal}, journal
    assert starts_of(journal, "victim") == 2, journal
    assert starts_of(journal, "after") == 1, journal


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retry-left", "one-retry-left"])
def test_a_worker_killed_outright_is_settled_by_the_reconciler(stack: Stack, retries: int) -> None:
    stack.start_workers("w1")
    nodes = {
        # Enqueued in this order on one worker: the victim runs, the others wait behind it.
        "a_victim": {"type": "sleep", "config": {"seconds": 5}, "retries": retries},
        "b_other": {"type": "noop"},
        "c_after_other": {"type": "sleep", "config": {"seconds": 0.1}},
        "d_after_victim": {"type": "noop"},
    }
    stack.put_workflow(
        "worker_kill", nodes, {"c_after_other": ["b_other"], "d_after_victim": ["a_victim"]}
    )
    job_run_id = new_run_id()
    stack.start_run("worker_kill", job_run_id)
    before = stack.wait_for_node(job_run_id, "a_victim", "running")
    if before["nodes"]["b_other"]["started_at"] is not None:
        pytest.fail(f"set-up: b_other ran before the kill\n{stack.explain(job_run_id)}")
    horse = stack.horse_of("w1")

    stack.workers["w1"].kill_group()
    os.kill(horse, signal.SIGKILL)  # RQ's work horse leads a process group of its own
    stack.start_workers("w2")  # so that the rest of the run can go on

    # Nobody reports the victim: only the gateway's reconciler can settle it.
    run = stack.wait_for_end(job_run_id, timeout=60)
    context = stack.explain(job_run_id)
    victim = run["nodes"]["a_victim"]
    journal = transitions(stack.database_url, job_run_id)
    assert run["nodes"]["b_other"]["status"] == "succeeded", context
    assert run["nodes"]["c_after_other"]["status"] == "succeeded", context
    if retries:
        assert run["status"] == "succeeded", context
        assert (victim["status"], victim["attempts"]) == ("succeeded", 2), context
        assert run["nodes"]["d_after_victim"]["status"] == "succeeded", context
        assert ("a_victim", 1, "retrying") in {(n, a, s) for n, a, s, _ in journal}, journal
    else:
        assert run["status"] == "failed", context
        assert (victim["status"], victim["attempts"]) == ("failed", 1), context
        assert "worker lost" in (victim["error"] or ""), context
        assert run["nodes"]["d_after_victim"]["status"] == "skipped", context
        assert starts_of(journal, "d_after_victim") == 0, journal
        with Redis.from_url(stack.redis_url) as redis:
            waiting = DeferredJobRegistry("default", connection=redis).get_job_ids(cleanup=False)
        assert job_id_for(job_run_id, "d_after_victim") not in waiting, "a dependent stays deferred"


# -- start-up and readiness ---------------------------------------------------------------


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A brand-new PostgreSQL database nobody migrated."""
    name = f"figway_unmigrated_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_gateway_refuses_an_unmigrated_database(
    empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    env = clean_env({"FIGWAY_DATABASE_URL": empty_database, "FIGWAY_REDIS_URL": redis_url})
    gateway = subprocess.Popen(
        [FIGWAY, "serve", "--port", str(free_port()), "--ws-port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = gateway.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(gateway.pid, signal.SIGKILL)
        out, err = gateway.communicate()
        pytest.fail(f"`figway serve` kept running on an un-migrated database:\n{out}{err}")

    assert gateway.returncode != 0, f"exit 0 on an un-migrated database:\n{out}{err}"
    assert "figway db upgrade" in err, f"stderr does not say what to run:\n{err}"
    with psycopg.connect(empty_database) as connection:
        row = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert row == (0,), "the gateway migrated a production database on its own"


def test_readyz_reports_the_workers(stack: Stack) -> None:
    stack.start_workers("w1", "w2")

    response = stack.http.get("/readyz")

    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ready", body
    assert body["checks"]["database"]["up"] is True, body
    assert body["checks"]["rq"]["up"] is True, body
    assert body["checks"]["rq"]["workers"] == 2, body
