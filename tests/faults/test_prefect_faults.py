"""Prefect faults, with real processes: a Prefect server of the module's own (on
PostgreSQL) that the tests kill and restart, its `prefect worker`, and `figway serve`.

Each fault hits runs in flight. Every run must end without help within a bound
(a generous deadline, not a timing threshold), each node must have run exactly as
many times as figway counts attempts (a tally file per node, written by the node
itself), and Prefect's record must agree with figway's: no task run left running.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.prefect_faults import (
    CuttableLink,
    assert_executions_are_attempts,
    assert_settled_and_agreeing,
    executions,
    tally_node,
    unfinished_task_runs,
    wait_until,
)
from tests.support.prefect_services import PG_ADMIN_URL, PrefectServices, own_prefect_services
from tests.support.prefect_stack import PrefectStack, prefect_stack

pytestmark = pytest.mark.service

#: The outage: Prefect's server is down this long with runs in flight (75 s for the
#: figures in docs/reliability-prefect.md: FIGWAY_FAULT_PREFECT_OUTAGE_SECONDS=75).
OUTAGE_SECONDS = float(os.environ.get("FIGWAY_FAULT_PREFECT_OUTAGE_SECONDS", "30"))
#: How long the Prefect server's database is away in the restart test.
DATABASE_RESTART_SECONDS = 10.0
#: How long every run may take to end once the fault is over: the node silence (3 s here),
#: a few reconcile rounds, a worker's poll, a flow-run process start and the work left.
SETTLE_SECONDS = 120.0
#: A request must be answered well within this while Prefect is down (a hang is not).
ANSWER_DEADLINE = 20.0


@pytest.fixture(scope="module")
def prefect_database_link() -> Iterator[CuttableLink]:
    """The Prefect server's path to PostgreSQL, which a test cuts as a restart would."""
    postgres = urlsplit(PG_ADMIN_URL)
    link = CuttableLink((postgres.hostname or "127.0.0.1", postgres.port or 5432))
    yield link
    link.close()


@pytest.fixture(scope="module")
def own_prefect(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory, prefect_database_link: CuttableLink
) -> Iterator[PrefectServices]:
    with own_prefect_services(
        pg_url, tmp_path_factory.mktemp("own-prefect"), database_port=prefect_database_link.port
    ) as services:
        yield services


@pytest.fixture
def stack(
    pg_url: str, redis_url: str, tmp_path: Path, own_prefect: PrefectServices
) -> Iterator[PrefectStack]:
    # A stopped server or worker (a test that failed half-way) is started again first.
    if not own_prefect.server.running():
        own_prefect.start_server()
    if own_prefect.worker is None or not own_prefect.worker.running():
        own_prefect.start_worker()
    with prefect_stack(
        database_url=pg_url,
        redis_url=redis_url,
        log_dir=tmp_path,
        services=own_prefect,
        settings={"FIGWAY_BACKEND_CHECK_SECONDS": "1"},
    ) as running:
        yield running


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def attempts(run: dict[str, Any]) -> dict[str, int]:
    return {node: view["attempts"] for node, view in run["nodes"].items()}


def backend_up(stack: PrefectStack) -> float | None:
    text = stack.http.get("/metrics").text
    found = re.search(r'^figway_backend_up\{backend="prefect"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def flow_run_states(stack: PrefectStack, job_run_id: str) -> list[str]:
    runs = sorted(stack.services.flow_runs(job_run_id), key=lambda r: r.created or 0)
    return [str(r.state_type.value) if r.state_type else "?" for r in runs]


def wait_for_prefects_record(
    stack: PrefectStack, job_run_id: str, states: list[str], context: str
) -> None:
    """The run's flow runs end in ``states`` (oldest first) and none of its task runs is
    left unfinished: Prefect's record agrees with figway's, a moment after the run ended."""
    wait_until(
        f"the flow runs ending [{', '.join(states)}]",
        lambda: flow_run_states(stack, job_run_id) == states,
        timeout=60,
        context=f"{flow_run_states(stack, job_run_id)}\n{context}",
    )
    wait_until(
        "Prefect's task runs all finished",
        lambda: not unfinished_task_runs(stack.services, [job_run_id]),
        timeout=60,
        context=context,
    )


def the_flow_run_process(stack: PrefectStack, job_run_id: str) -> int:
    return wait_until(
        "one flow-run process under the worker",
        lambda: (p := stack.services.engine_processes()) and len(p) == 1 and p[0],
        timeout=15,
        context=stack.explain(job_run_id),
    )


# -- the server goes away --------------------------------------------------------------------


@pytest.mark.timeout(OUTAGE_SECONDS + 2 * SETTLE_SECONDS + 180)
def test_a_prefect_server_outage_with_runs_in_flight(stack: PrefectStack, tmp_path: Path) -> None:
    nodes = {
        "first": tally_node(tmp_path, "first", 6, retries=1),
        "second": tally_node(tmp_path, "second", 1, retries=1),
    }
    stack.put_workflow("pf_outage", nodes, {"second": ["first"]}, backend="prefect")
    in_flight = [new_run_id("outage") for _ in range(4)]
    for job_run_id in in_flight:
        stack.start_run("pf_outage", job_run_id)
    for job_run_id in in_flight:
        stack.wait_for_node(job_run_id, "first", "running")
    # The node functions themselves have begun (not only their attempts been recorded).
    wait_until("every first node executing", lambda: executions(tmp_path, "first") == 4, timeout=30)

    stack.services.kill_server()
    down_at = time.monotonic()

    # A POST answers at once: 503 with Retry-After (no fallback in the rules), run kept.
    late = new_run_id("late")
    with httpx.Client(base_url=str(stack.http.base_url), timeout=ANSWER_DEADLINE) as client:
        asked = time.monotonic()
        refused = client.post("/workflow_runs/", json=stack.run_body("pf_outage", late))
        post_seconds = time.monotonic() - asked
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        assert refused.json()["job_run_id"] == late
        asked = time.monotonic()
        ready = client.get("/readyz")
        readyz_seconds = time.monotonic() - asked
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["prefect"]["up"] is False, ready.text
        assert ready.json()["checks"]["prefect"]["reason"] == "unreachable", ready.text
        assert "127.0.0.1" not in ready.text, "no host names on the open /readyz"
    wait_until("figway_backend_up reading 0", lambda: backend_up(stack) == 0.0, timeout=15)
    print(
        f"outage: POST answered 503 in {post_seconds:.1f} s, /readyz 503 in "
        f"{readyz_seconds:.1f} s, figway_backend_up read 0 {time.monotonic() - down_at:.1f} s "
        "after the server went down"
    )
    assert stack.get_run(late)["status"] == "pending"

    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    stack.services.start_server()
    back_at = time.monotonic()

    wait_until("figway_backend_up reading 1", lambda: backend_up(stack) == 1.0, timeout=15)
    # The client repeats its refused request: the recorded run is submitted.
    again = stack.http.post("/workflow_runs/", json=stack.run_body("pf_outage", late))
    assert again.status_code in (200, 202), again.text
    for job_run_id in in_flight:
        stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    in_flight_after = time.monotonic() - back_at
    stack.wait_for_end(late, timeout=SETTLE_SECONDS)
    late_after = time.monotonic() - back_at

    runs = assert_settled_and_agreeing(stack, [*in_flight, late], tmp_path, timeout=SETTLE_SECONDS)
    print(
        f"outage {OUTAGE_SECONDS:.0f} s: the runs in flight had ended {in_flight_after:.1f} s "
        f"and the refused one {late_after:.1f} s after the server was back; Prefect's record "
        f"agreed {time.monotonic() - back_at:.1f} s after; attempts "
        f"{[attempts(r) for r in runs]}; flow runs "
        f"{[flow_run_states(stack, r['job_run_id']) for r in runs]}"
    )


def test_a_restart_of_prefects_database_with_runs_in_flight(
    stack: PrefectStack, tmp_path: Path, prefect_database_link: CuttableLink
) -> None:
    nodes = {  # the first node outlasts the restart: it reports once the database is back
        "first": tally_node(tmp_path, "first", DATABASE_RESTART_SECONDS + 5, retries=1),
        "second": tally_node(tmp_path, "second", 1, retries=1),
    }
    stack.put_workflow("pf_db_restart", nodes, {"second": ["first"]}, backend="prefect")
    in_flight = [new_run_id("dbrestart") for _ in range(3)]
    for job_run_id in in_flight:
        stack.start_run("pf_db_restart", job_run_id)
    for job_run_id in in_flight:
        stack.wait_for_node(job_run_id, "first", "running")
    wait_until("every first node executing", lambda: executions(tmp_path, "first") == 3, timeout=30)

    prefect_database_link.cut()
    time.sleep(DATABASE_RESTART_SECONDS)
    prefect_database_link.restore()
    back_at = time.monotonic()

    for job_run_id in in_flight:
        stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    settled_after = time.monotonic() - back_at
    runs = assert_settled_and_agreeing(stack, in_flight, tmp_path, timeout=SETTLE_SECONDS)
    print(
        f"Prefect database away {DATABASE_RESTART_SECONDS:.0f} s: every run ended "
        f"{settled_after:.1f} s after it was back; attempts {[attempts(r) for r in runs]}; "
        f"flow runs {[flow_run_states(stack, r) for r in in_flight]}"
    )


# -- processes die ---------------------------------------------------------------------------


def test_a_killed_prefect_worker_leaves_its_run_resumed(
    stack: PrefectStack, tmp_path: Path
) -> None:
    nodes = {
        "victim": tally_node(tmp_path, "victim", 20, retries=1),
        "after": tally_node(tmp_path, "after", 0.1, retries=0),
    }
    stack.put_workflow("pf_worker_kill", nodes, {"after": ["victim"]}, backend="prefect")
    job_run_id = new_run_id("wkill")
    stack.start_run("pf_worker_kill", job_run_id)
    stack.wait_for_node(job_run_id, "victim", "running")
    wait_until("the victim executing", lambda: executions(tmp_path, "victim") == 1, timeout=30)

    stack.services.kill_worker()  # its flow-run process goes down with it
    stack.services.start_worker()
    back_at = time.monotonic()

    stack.wait_for(
        job_run_id,
        "the victim's second attempt",
        lambda run: run["nodes"]["victim"]["attempts"] == 2,
        timeout=SETTLE_SECONDS,
    )
    resumed_after = time.monotonic() - back_at
    run = stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    context = stack.explain(job_run_id)
    assert run["status"] == "succeeded", context
    assert attempts(run) == {"victim": 2, "after": 1}, context
    assert_executions_are_attempts(tmp_path, [run], context)
    # The new flow run ends a moment after figway's run did.
    wait_for_prefects_record(stack, job_run_id, ["CRASHED", "COMPLETED"], context)
    print(
        f"killed worker: the victim ran again {resumed_after:.1f} s and the run ended "
        f"{time.monotonic() - back_at:.1f} s after the worker's restart"
    )


def test_a_killed_flow_run_process_is_resumed_without_rerunning_done_nodes(
    stack: PrefectStack, tmp_path: Path
) -> None:
    nodes = {
        "done_first": tally_node(tmp_path, "done_first", 0.1, retries=0),
        "victim": tally_node(tmp_path, "victim", 20, retries=2),
        "after": tally_node(tmp_path, "after", 0.1, retries=0),
        # Beside it, a node on its last attempt: it fails with the cause, its child is
        # skipped, and the rest of the run is still done.
        "fragile": tally_node(tmp_path, "fragile", 20, retries=0),
        "fragile_child": tally_node(tmp_path, "fragile_child", 0.1, retries=0),
    }
    stack.put_workflow(
        "pf_process_kill",
        nodes,
        {"victim": ["done_first"], "after": ["victim"], "fragile_child": ["fragile"]},
        backend="prefect",
    )
    job_run_id = new_run_id("pkill")
    stack.start_run("pf_process_kill", job_run_id)
    for node in ("victim", "fragile"):
        stack.wait_for_node(job_run_id, node, "running")
        wait_until(f"{node} executing", lambda n=node: executions(tmp_path, n) == 1, timeout=30)

    os.kill(the_flow_run_process(stack, job_run_id), signal.SIGKILL)
    killed_at = time.monotonic()

    stack.wait_for(
        job_run_id,
        "the victim's second attempt",
        lambda run: run["nodes"]["victim"]["attempts"] == 2,
        timeout=SETTLE_SECONDS,
    )
    resumed_after = time.monotonic() - killed_at
    run = stack.wait_for_end(job_run_id, timeout=SETTLE_SECONDS)
    context = stack.explain(job_run_id)
    assert run["status"] == "failed", context
    assert {n: v["status"] for n, v in run["nodes"].items()} == {
        "done_first": "succeeded",
        "victim": "succeeded",
        "after": "succeeded",
        "fragile": "failed",
        "fragile_child": "skipped",
    }, context
    assert attempts(run) == {
        "done_first": 1,
        "victim": 2,
        "after": 1,
        "fragile": 1,
        "fragile_child": 0,
    }, context
    assert run["nodes"]["fragile"]["error"] == (
        "attempt 1 was lost with its Prefect flow-run process, and no retries are left"
    ), context
    assert_executions_are_attempts(tmp_path, [run], context)
    # The new flow run ends a moment after figway's run did.
    wait_for_prefects_record(stack, job_run_id, ["CRASHED", "FAILED"], context)
    print(
        f"killed flow-run process: the victim ran again {resumed_after:.1f} s and the run "
        f"ended {time.monotonic() - killed_at:.1f} s after the kill"
    )
