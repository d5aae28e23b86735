"""A rollout in steps through a real gateway on the real PostgreSQL: its own judge thread
advances it on recorded evidence, runs record the step that routed them, and people
pause, resume and pin it over HTTP.

The evidence is recorded finished runs (``tests/support/finished_runs.py``): the judge
needs tens of runs a side, which real runs would take minutes to provide. Real runs go
to RQ (job ids outside the rollout), so no Prefect server is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backends.store import Store, create_database_engine
from gateway.routing.bucketing import bucket_of, in_rollout
from tests.support.api_client import Gateway, define, start, unique, wait_for, wait_for_run
from tests.support.finished_runs import record_runs
from tests.support.gateway import client_of, running_gateway

pytestmark = pytest.mark.service

#: A rule id of this module's own: the session's database is shared with other modules.
RULE = unique("stepped-api")
PREFIX = unique("stepped")
RULES = f"""\
phase: 2
default: rq
rules:
  - id: {RULE}
    match: {{workflow_id: "{PREFIX}-*"}}
    backend: prefect
    otherwise: rq
    sticky_by: job_id
    steps: [5, 50, 100]
    promote: {{min_runs: 20, watch: [execution_time], max_ratio: 1.5}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Gateway]:
    rules = tmp_path_factory.mktemp("rules") / "routing_rules.yaml"
    rules.write_text(RULES)
    with running_gateway(
        tmp_path_factory.mktemp("stepped"),
        database_url=pg_url,
        routing_rules=rules,
        routing_reload_seconds=0.2,
        guard_interval_seconds=0.3,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def store(pg_url: str) -> Iterator[Store]:
    engine = create_database_engine(pg_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with client_of(gateway) as http:
        yield http


def rollout(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/routing/rules")
    assert response.status_code == 200, response.text
    (found,) = [r for r in response.json()["rollouts"] if r["rule_id"] == RULE]
    return found


def outside_job(percent: float) -> str:
    """A job id the rule sends to RQ at ``percent``, so the run needs no Prefect."""
    return next(
        job
        for job in (f"job-{i}" for i in range(1_000))
        if not in_rollout(bucket_of(RULE, job), percent)
    )


def test_the_gateway_advances_a_rollout_on_evidence_and_runs_record_its_step(
    client: httpx.Client, store: Store
) -> None:
    assert rollout(client)["percent"] == 5
    workflow_id = define(client, {"a": {"type": "noop"}}, prefix=PREFIX)
    first = start(client, workflow_id, job_id=outside_job(5))
    assert first["backend"] == "rq"
    assert first["routing"]["rule"] == RULE
    assert "outside the rollout at 5% (step 1 of 3): rq" in first["routing"]["reason"]
    assert wait_for_run(client, first["job_run_id"])["status"] == "succeeded"

    status = client.get("/routing/guards/status").json()
    (mine,) = [s for s in status if s["rule_id"] == RULE]
    assert mine["figures"] is None, "no guard: the rollout's own judgement is what counts"
    assert mine["rollout"]["judgement"]["answer"] == "inconclusive"
    assert mine["rollout"]["plan"]["more_runs"] > 0
    assert mine["rollout"]["plan"]["text"].startswith("about ")

    record_runs(store, backend="rq", count=60, rule=RULE, workflow_id=workflow_id)
    record_runs(store, backend="prefect", count=60, rule=RULE, workflow_id=workflow_id)

    advanced = wait_for(
        lambda: rollout(client), lambda r: r["percent"] == 50, "the gateway advancing to 50%"
    )
    event = advanced["recent"][0]
    assert (event["action"], event["from_percent"], event["to_percent"], event["by"]) == (
        "advanced",
        5,
        50,
        "gateway",
    )
    assert event["evidence"]["answer"] == "not_worse"
    assert event["reason"].startswith("at 5% (step 1 of 3): prefect is not worse than rq")
    history = client.get("/routing/rollouts/history", params={"rule_id": RULE}).json()
    assert [e["action"] for e in history] == ["advanced", "started"]

    later = start(client, workflow_id, job_id=outside_job(50))
    assert "outside the rollout at 50% (step 2 of 3): rq" in later["routing"]["reason"]
    metrics = client.get("/metrics").text
    assert f'figway_rollout_percent{{rule="{RULE}"}} 50.0' in metrics
    assert f'figway_rollout_step{{rule="{RULE}"}} 2.0' in metrics
    wait_for_run(client, later["job_run_id"])


def test_pause_resume_and_pin_over_http(client: httpx.Client) -> None:
    paused = client.post(f"/routing/rollouts/{RULE}/pause", params={"by": "alice"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    assert paused.json()["recent"][0]["by"] == "alice"

    again = client.post(f"/routing/rollouts/{RULE}/pause")
    assert again.status_code == 409
    assert "already paused" in again.json()["detail"]

    wrong = client.post(f"/routing/rollouts/{RULE}/pin", params={"percent": 33})
    assert wrong.status_code == 409
    assert "33% is not a step" in wrong.json()["detail"]
    bad = client.post(f"/routing/rollouts/{RULE}/pin", params={"percent": 0})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "percent"
    missing = client.post("/routing/rollouts/no-such-rule/pause")
    assert missing.status_code == 404
    assert "has no steps" in missing.json()["detail"]

    pinned = client.post(f"/routing/rollouts/{RULE}/pin", params={"percent": 5, "by": "bob"})
    assert pinned.status_code == 200, pinned.text
    assert (pinned.json()["percent"], pinned.json()["state"]) == (5, "pinned")
    resumed = client.post(f"/routing/rollouts/{RULE}/resume", params={"by": "carol"})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "running"
    actions = [
        (e["action"], e["by"])
        for e in client.get("/routing/rollouts/history", params={"rule_id": RULE}).json()
    ]
    assert actions[:3] == [("resumed", "carol"), ("pinned", "bob"), ("paused", "alice")]


def test_guards_status_lists_only_guarded_or_stepped_rules(client: httpx.Client) -> None:
    status = client.get("/routing/guards/status")
    assert status.status_code == 200, status.text
    assert [s["rule_id"] for s in status.json()] == [RULE]
