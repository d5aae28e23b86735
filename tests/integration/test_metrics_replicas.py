"""Two `figway serve` processes on one PostgreSQL: every finished run is counted exactly once
across both gateways' /metrics, and still once after the exporting gateway stops."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.figway_stack import Stack

pytestmark = pytest.mark.service

WORKFLOW = "metrics_replicas"


def finished_and_leader(gateway: Stack) -> tuple[float, float]:
    """(figway_runs_finished_total of the workflow, figway_metrics_leader) on one gateway."""
    text = gateway.http.get("/metrics").text
    finished = leader = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "figway_runs_finished_total"
                and sample.labels.get("workflow_id") == WORKFLOW
            ):
                finished += sample.value
            elif sample.name == "figway_metrics_leader":
                leader = sample.value
    return finished, leader


def eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.3)


@pytest.fixture
def second(stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    """Another gateway on the same database and Redis, as a second replica would be."""
    log_dir = tmp_path / "second"
    log_dir.mkdir()
    replica = Stack(database_url=stack.database_url, redis_url=stack.redis_url, log_dir=log_dir)
    replica.start_gateway()
    try:
        yield replica
    finally:
        replica.close()


def start_runs(gateway: Stack, count: int) -> list[str]:
    ids = [f"mr-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    for job_run_id in ids:
        gateway.start_run(WORKFLOW, job_run_id)
    return ids


def test_each_finished_run_counts_once_across_gateways_and_a_takeover(
    stack: Stack, second: Stack
) -> None:
    stack.start_workers("metrics-rq")
    stack.put_workflow(WORKFLOW, {"a": {"type": "noop"}, "b": {"type": "noop"}}, {"b": ["a"]})
    runs = start_runs(stack, 5) + start_runs(second, 5)
    for job_run_id in runs:
        assert stack.wait_for_end(job_run_id)["status"] == "succeeded"

    def both() -> list[tuple[float, float]]:
        return [finished_and_leader(stack), finished_and_leader(second)]

    eventually(lambda: sum(f for f, _ in both()) == 10, "10 finished runs across both gateways")
    figures = both()
    assert sorted(leader for _, leader in figures) == [0, 1], f"one leader: {figures}"
    assert sorted(f for f, _ in figures) == [0, 10], f"only the leader exports them: {figures}"

    # The exporting gateway stops; the other takes the ledger over and carries on from the
    # totals: nothing lost, nothing counted again, and new runs are added once.
    leader, other = (stack, second) if figures[0][1] == 1 else (second, stack)
    assert leader.gateway is not None
    leader.gateway.stop()
    eventually(lambda: finished_and_leader(other) == (10, 1), "the takeover with the same totals")
    more = start_runs(other, 3)
    for job_run_id in more:
        assert other.wait_for_end(job_run_id)["status"] == "succeeded"
    eventually(lambda: finished_and_leader(other)[0] == 13, "the new runs counted")
    time.sleep(1)
    assert finished_and_leader(other)[0] == 13, "and counted once"
