"""``/metrics`` through the real gateway: Prometheus' format, the run figures of runs just
finished, and the gateway's own series."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_client import define, start, wait_for, wait_for_run


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_finished_runs_appear_once_with_their_outcome_and_timings(client: httpx.Client) -> None:
    workflow_id = define(
        client,
        {"ok": {"type": "noop"}, "flaky": {"type": "fail", "config": {"times": 1}, "retries": 1}},
    )
    broken = define(client, {"bad": {"type": "fail"}})
    runs = [start(client, workflow_id)["job_run_id"] for _ in range(3)]
    runs.append(start(client, broken)["job_run_id"])
    for job_run_id in runs:
        wait_for_run(client, job_run_id)

    def finished(found: dict[Any, float]) -> bool:
        return found.get(succeeded, 0) == 3 and found.get(failed, 0) == 1

    succeeded = (
        "figway_runs_finished_total",
        frozenset({("backend", "rq"), ("workflow_id", workflow_id), ("outcome", "succeeded")}),
    )
    failed = (
        "figway_runs_finished_total",
        frozenset({("backend", "rq"), ("workflow_id", broken), ("outcome", "failed")}),
    )
    found = wait_for(lambda: samples(client), finished, "the runs in /metrics")
    series = frozenset({("backend", "rq"), ("workflow_id", workflow_id)})
    assert found[("figway_runs_submitted_total", series)] == 3
    assert found[("figway_run_duration_seconds_count", series)] == 3
    assert found[("figway_node_retries_total", series)] == 3, "one retry of `flaky` per run"
    assert found[("figway_metrics_leader", frozenset())] == 1
    # The gateway's own series: each POST routed and accepted on RQ.
    assert found[("figway_routing_decisions_total", frozenset({("backend", "rq"), ("rule", "default"), ("reason", "default")}))] >= 4  # fmt: skip
    assert found[("figway_submit_seconds_count", frozenset({("backend", "rq")}))] >= 4
    wait_for(
        lambda: samples(client).get(("figway_backend_up", frozenset({("backend", "rq")}))),
        lambda up: up == 1,
        "figway_backend_up for rq",
    )
