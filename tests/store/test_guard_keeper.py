"""Guards on recorded runs, on SQLite and on PostgreSQL: trip, hold, reset, one trip for all.

Runs are written as the gateway writes them (``Store.create_run`` with their
route), then finished with chosen outcomes and times, so the guard reads the
same rows it reads in production.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from backends.model.status import RunStatus
from backends.model.workflow import RunPlan
from backends.store import Store
from backends.store.models import Run
from backends.store.routing_records import RoutingRecords
from backends.store.views import Route
from gateway.routing.guard import GuardKeeper
from gateway.routing.loading import parse_rules
from gateway.routing.router import Router, RunFacts
from tests.support.plans import one_node_workflow

RULES = """\
phase: 2
default: rq
rules:
  - id: canary
    match: {workflow_id: etl}
    backend: prefect
    percent: 50
    guard:
      min_runs: 10
      window_hours: 1
      max_failure_rate_increase: 0.10
      max_p95_ratio: 2
"""

NOW = datetime.now(UTC)
_ids = itertools.count()


def record_runs(
    store: Store,
    *,
    backend: str,
    count: int,
    failed: int = 0,
    seconds: float = 10.0,
    rule: str | None = "canary",
    finished_ago: timedelta = timedelta(minutes=5),
    workflow_id: str = "etl",
) -> None:
    """``count`` finished runs of the workflow on ``backend``, ``failed`` of them failed."""
    definition = one_node_workflow(workflow_id)
    for index in range(count):
        job_run_id = f"guard-{next(_ids)}"
        plan = RunPlan.from_definition(definition, job_run_id=job_run_id, job_id=job_run_id)
        route = Route(rule, "v1", "test")
        assert store.create_run(plan=plan, backend=backend, from_job=None, route=route)
        finished = NOW - finished_ago
        with store.engine.begin() as connection:
            connection.execute(
                update(Run)
                .where(Run.job_run_id == job_run_id)
                .values(
                    status=RunStatus.FAILED if index < failed else RunStatus.SUCCEEDED,
                    created_at=finished - timedelta(seconds=seconds),
                    finished_at=finished,
                )
            )


@pytest.fixture
def keeper(store: Store) -> GuardKeeper:
    return GuardKeeper(Router(parse_rules(RULES, source="test")), RoutingRecords(store.engine))


def routed_backends(router: Router) -> set[str]:
    return {router.decide(RunFacts("etl", "ws", "f", f"job-{i}")).backend for i in range(200)}


def test_a_guard_trips_when_prefect_fails_more_and_sends_every_run_back(
    store: Store, keeper: GuardKeeper
) -> None:
    record_runs(store, backend="rq", count=20, failed=1)
    record_runs(store, backend="prefect", count=20, failed=6)
    assert routed_backends(keeper.router) == {"rq", "prefect"}

    assert keeper.check(now=NOW) == ["canary"]

    assert routed_backends(keeper.router) == {"rq"}
    decision = keeper.router.decide(RunFacts("etl", "ws", "f", "any"))
    assert "guard tripped" in decision.reason
    (trip,) = keeper.records.tripped_guards().values()
    assert trip.rule_id == "canary"
    assert "failure rate 30.0% on prefect against 5.0% on rq" in trip.reason
    assert trip.figures["guarded"] == {
        "backend": "prefect",
        "runs": 20,
        "failed": 6,
        "failure_rate": 0.3,
        "p95_seconds": 10.0,
    }
    assert trip.figures["baseline"]["runs"] == 20


def test_a_guard_trips_on_p95_alone(store: Store, keeper: GuardKeeper) -> None:
    record_runs(store, backend="rq", count=12, seconds=10)
    record_runs(store, backend="prefect", count=12, seconds=25)
    assert keeper.check(now=NOW) == ["canary"]
    assert (
        "p95 25.00s on prefect against 10.00s on rq"
        in keeper.records.tripped_guards()["canary"].reason
    )


@pytest.mark.parametrize(
    ("rq_runs", "prefect_runs"),
    [pytest.param(9, 30, id="too-few-on-rq"), pytest.param(30, 9, id="too-few-on-prefect")],
)
def test_a_guard_never_trips_on_too_little_data(
    store: Store, keeper: GuardKeeper, rq_runs: int, prefect_runs: int
) -> None:
    record_runs(store, backend="rq", count=rq_runs)
    record_runs(store, backend="prefect", count=prefect_runs, failed=prefect_runs)
    assert keeper.check(now=NOW) == []
    assert keeper.records.tripped_guards() == {}


def test_runs_outside_the_window_or_of_other_workflows_do_not_count(
    store: Store, keeper: GuardKeeper
) -> None:
    record_runs(store, backend="rq", count=20)
    record_runs(store, backend="prefect", count=20, failed=20, finished_ago=timedelta(hours=2))
    record_runs(store, backend="prefect", count=20, failed=20, rule=None, workflow_id="other")
    assert keeper.check(now=NOW) == []


def test_a_trip_holds_until_reset_and_old_evidence_cannot_trip_it_again(
    store: Store, keeper: GuardKeeper
) -> None:
    record_runs(store, backend="rq", count=20)
    record_runs(store, backend="prefect", count=20, failed=10)
    assert keeper.check(now=NOW) == ["canary"]
    assert keeper.check(now=NOW) == [], "a tripped guard is not evaluated again"
    assert keeper.router.tripped.keys() == {"canary"}

    assert keeper.reset("canary", by="alice")
    assert not keeper.reset("canary", by="alice"), "nothing left to reset"
    assert keeper.router.tripped == {}
    assert routed_backends(keeper.router) == {"rq", "prefect"}
    # The same bad runs are older than the reset: they no longer count.
    assert keeper.check(now=NOW + timedelta(seconds=1)) == []
    history = keeper.records.guard_history()
    assert [(t.rule_id, t.reset_by) for t in history] == [("canary", "alice")]


def test_two_gateways_record_one_trip_and_both_route_around_it(
    store: Store, keeper: GuardKeeper
) -> None:
    other = GuardKeeper(Router(parse_rules(RULES, source="test")), RoutingRecords(store.engine))
    record_runs(store, backend="rq", count=20)
    record_runs(store, backend="prefect", count=20, failed=10)
    tripped = keeper.check(now=NOW) + other.check(now=NOW)
    assert tripped == ["canary"], "the second gateway finds the trip in force"
    assert len(keeper.records.guard_history()) == 1
    other.refresh()
    assert routed_backends(other.router) == {"rq"}


def test_status_shows_each_guards_figures_before_it_trips(
    store: Store, keeper: GuardKeeper
) -> None:
    record_runs(store, backend="rq", count=12)
    record_runs(store, backend="prefect", count=4, failed=4)
    ((rule, verdict),) = keeper.status()
    assert rule.id == "canary"
    assert not verdict.trip
    assert verdict.reason.startswith("not enough data: 4 finished run(s) on prefect and 12 on rq")
    assert verdict.figures()["guarded"]["failure_rate"] == 1.0
    assert keeper.records.tripped_guards() == {}, "asking trips nothing"
