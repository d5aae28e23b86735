"""Guards on recorded runs, on SQLite and on PostgreSQL: the judge trips, holds, resets,
and one trip stands for every gateway.

Runs are written as the gateway writes them (``tests/support/finished_runs.py``), so
the guard reads the same rows it reads in production.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backends.store import Store
from backends.store.routing_records import RoutingRecords
from gateway.routing.guard import GuardKeeper
from gateway.routing.loading import parse_rules
from gateway.routing.router import Router, RunFacts
from tests.support.finished_runs import record_runs

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
      watch: [failure_rate, execution_time]
      max_failure_rate_increase: 0.10
      max_ratio: 2
"""


def finished(store: Store, *, ago: timedelta = timedelta(minutes=5), **fields: Any) -> None:
    """Runs that finished ``ago`` (before any reset the test makes)."""
    record_runs(store, accepted_from=datetime.now(UTC) - ago, **fields)


@pytest.fixture
def keeper(store: Store) -> GuardKeeper:
    return GuardKeeper(Router(parse_rules(RULES, source="test")), RoutingRecords(store.engine))


def routed_backends(router: Router) -> set[str]:
    return {router.decide(RunFacts("etl", "ws", "f", f"job-{i}")).backend for i in range(200)}


def test_a_guard_trips_when_the_judge_finds_prefect_failing_more(
    store: Store, keeper: GuardKeeper
) -> None:
    finished(store, backend="rq", count=60, failed=1)
    finished(store, backend="prefect", count=60, failed=30)
    assert routed_backends(keeper.router) == {"rq", "prefect"}

    assert keeper.check() == ["canary"]

    assert routed_backends(keeper.router) == {"rq"}
    decision = keeper.router.decide(RunFacts("etl", "ws", "f", "any"))
    assert "guard tripped" in decision.reason
    (trip,) = keeper.records.tripped_guards().values()
    assert trip.reason.startswith("prefect is worse than rq on failure rate (+")
    figures = trip.figures
    assert figures["answer"] == "worse"
    assert figures["watched"] == ["failure_rate", "execution_time"]
    assert (figures["candidate_runs"], figures["baseline_runs"]) == (60, 60)
    failure = figures["figures"]["failure_rate"]
    assert failure["answer"] == "worse"
    assert failure["lower"] > failure["threshold"] == 10
    assert set(figures["figures"]) == {"failure_rate", "queue_wait", "execution_time", "total_time"}


def test_a_guard_trips_on_execution_time_alone(store: Store, keeper: GuardKeeper) -> None:
    finished(store, backend="rq", count=40, seconds=10)
    finished(store, backend="prefect", count=40, seconds=30)
    assert keeper.check() == ["canary"]
    reason = keeper.records.tripped_guards()["canary"].reason
    assert "worse than rq on execution time (x3.00" in reason


def test_a_slower_queue_it_does_not_watch_never_trips_it(store: Store, keeper: GuardKeeper) -> None:
    """Prefect's worker pick-up is its own figure: shown, judged only when watched."""
    finished(store, backend="rq", count=40, wait=0.5)
    finished(store, backend="prefect", count=40, wait=20)
    assert keeper.check() == []
    ((_, verdict),) = keeper.status()
    assert verdict.judgement.figure("queue_wait").answer.value == "worse"
    assert not verdict.judgement.figure("queue_wait").watched


@pytest.mark.parametrize(
    ("rq_runs", "prefect_runs"),
    [pytest.param(9, 30, id="too-few-on-rq"), pytest.param(30, 9, id="too-few-on-prefect")],
)
def test_a_guard_never_trips_below_min_runs(
    store: Store, keeper: GuardKeeper, rq_runs: int, prefect_runs: int
) -> None:
    finished(store, backend="rq", count=rq_runs)
    finished(store, backend="prefect", count=prefect_runs, failed=prefect_runs)
    assert keeper.check() == []
    assert keeper.records.tripped_guards() == {}


def test_a_few_bad_runs_are_not_enough_evidence(store: Store, keeper: GuardKeeper) -> None:
    """3 failures in 20 against none: the old point-estimate rule tripped; the judge waits."""
    finished(store, backend="rq", count=20)
    finished(store, backend="prefect", count=20, failed=3)
    assert keeper.check() == []
    ((_, verdict),) = keeper.status()
    assert verdict.judgement.answer.value == "inconclusive"
    assert verdict.plan.more_runs is not None
    assert verdict.plan.more_runs > 0


def test_runs_outside_the_window_or_of_other_workflows_do_not_count(
    store: Store, keeper: GuardKeeper
) -> None:
    finished(store, backend="rq", count=40)
    finished(store, backend="prefect", count=40, failed=40, ago=timedelta(hours=2))
    finished(store, backend="prefect", count=40, failed=40, rule=None, workflow_id="other")
    assert keeper.check() == []


def test_a_trip_holds_until_reset_and_old_evidence_cannot_trip_it_again(
    store: Store, keeper: GuardKeeper
) -> None:
    finished(store, backend="rq", count=40)
    finished(store, backend="prefect", count=40, failed=30)
    assert keeper.check() == ["canary"]
    assert keeper.check() == [], "a tripped guard is not evaluated again"
    assert keeper.router.tripped.keys() == {"canary"}

    assert keeper.reset("canary", by="alice")
    assert not keeper.reset("canary", by="alice"), "nothing left to reset"
    assert keeper.router.tripped == {}
    assert routed_backends(keeper.router) == {"rq", "prefect"}
    # The same bad runs are older than the reset: they no longer count.
    assert keeper.check() == []
    history = keeper.records.guard_history()
    assert [(t.rule_id, t.reset_by) for t in history] == [("canary", "alice")]


def test_two_gateways_record_one_trip_and_both_route_around_it(
    store: Store, keeper: GuardKeeper
) -> None:
    other = GuardKeeper(Router(parse_rules(RULES, source="test")), RoutingRecords(store.engine))
    finished(store, backend="rq", count=40)
    finished(store, backend="prefect", count=40, failed=30)
    tripped = keeper.check() + other.check()
    assert tripped == ["canary"], "the second gateway finds the trip in force"
    assert len(keeper.records.guard_history()) == 1
    other.refresh()
    assert routed_backends(other.router) == {"rq"}


def test_status_shows_the_evidence_and_what_it_still_needs(
    store: Store, keeper: GuardKeeper
) -> None:
    finished(store, backend="rq", count=12)
    finished(store, backend="prefect", count=4, failed=4)
    ((rule, verdict),) = keeper.status()
    assert rule.id == "canary"
    assert not verdict.trip
    assert verdict.reason.startswith("Too early to say whether prefect is worse than rq")
    assert "(at least 10 a side needed)" in verdict.reason
    figures = verdict.figures()
    assert figures["figures"]["failure_rate"]["candidate_value"] == 100.0
    assert figures["plan"]["runs_per_hour"] > 0
    assert figures["window_hours"] == 1
    assert keeper.records.tripped_guards() == {}, "asking trips nothing"
