"""Rollouts in steps on recorded runs, on SQLite and on PostgreSQL: the judge holds, advances
and rolls back; people pause, resume and pin; the file changes the steps under a live
rollout; two gateways share one rollout.

Runs are written as the gateway writes them (``tests/support/finished_runs.py``): each
batch is accepted after the step it is evidence for began, as it would be live.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from backends.model.errors import NotFoundError, RolloutConflictError
from backends.store import Store
from backends.store.rollout_records import RolloutRecords
from backends.store.routing_records import RoutingRecords
from gateway.routing.guard import GuardKeeper
from gateway.routing.loading import parse_rules
from gateway.routing.promotion import RolloutKeeper
from gateway.routing.rollout import RolloutState
from gateway.routing.router import Router, RunFacts
from tests.support.finished_runs import record_runs


def rules(steps: str = "[5, 25, 50, 100]") -> str:
    return f"""\
phase: 2
default: rq
rules:
  - id: canary
    match: {{workflow_id: etl}}
    backend: prefect
    otherwise: rq
    sticky_by: job_id
    steps: {steps}
    promote: {{min_runs: 20, watch: [execution_time], max_ratio: 1.5}}
"""


def keeper_on(store: Store, content: str | None = None) -> RolloutKeeper:
    """One gateway's rollout keeper: its own router, the shared database."""
    router = Router(parse_rules(content or rules(), source="test"))
    keeper = RolloutKeeper(router, RoutingRecords(store.engine), RolloutRecords(store.engine))
    keeper.sync()
    return keeper


@pytest.fixture
def keeper(store: Store) -> RolloutKeeper:
    return keeper_on(store)


def at_step(store: Store, *, prefect_seconds: float = 10.0, count: int = 30) -> None:
    """A step's worth of finished runs on both sides, all accepted before this returns.

    (Spread 10 ms apart, the last of them would be accepted in the future, and a step
    the keeper begins meanwhile would count them as its own.)
    """
    close_together = timedelta(microseconds=1)
    record_runs(store, backend="rq", count=count, seconds=10.0, every=close_together)
    record_runs(
        store, backend="prefect", count=count, seconds=prefect_seconds, every=close_together
    )


def on_prefect(router: Router, jobs: int = 2_000) -> set[str]:
    return {
        f"job-{i}"
        for i in range(jobs)
        if router.decide(RunFacts("etl", "ws", "f", f"job-{i}")).backend == "prefect"
    }


def actions(keeper: RolloutKeeper) -> list[tuple[str, float | None, str]]:
    """Every event, oldest first: (action, to percent, by)."""
    return [(e.action, e.to_percent, e.by) for e in reversed(keeper.records.events())]


def test_inconclusive_holds_then_not_worse_advances_with_its_evidence(
    store: Store, keeper: RolloutKeeper
) -> None:
    assert keeper.router.rollouts["canary"].percent == 5
    first = on_prefect(keeper.router)
    assert 50 < len(first) < 150, "about 5% of 2,000 jobs"

    assert keeper.check() == [], "no runs: nothing moves"
    at_step(store, count=10)
    assert keeper.check() == [], "10 runs a side, below min_runs 20: nothing moves"
    (status,) = keeper.status()
    assert status.judgement is not None
    assert status.judgement.answer.value == "inconclusive"
    assert status.plan is not None
    assert status.plan.more_runs is not None
    assert status.plan.more_runs >= 10

    at_step(store, count=30)
    assert keeper.check() == ["canary"]

    position = keeper.router.rollouts["canary"]
    assert (position.percent, position.step, position.state) == (25, 2, RolloutState.RUNNING)
    now_on_prefect = on_prefect(keeper.router)
    assert first < now_on_prefect, "sticky and monotone: every job at 5% is still on Prefect"
    event = keeper.records.events(rule_id="canary")[0]
    assert (event.action, event.from_percent, event.to_percent) == ("advanced", 5, 25)
    assert event.evidence["answer"] == "not_worse"
    assert event.evidence["figures"]["execution_time"]["answer"] == "not_worse"
    assert event.reason.startswith("at 5% (step 1 of 4): prefect is not worse than rq")
    decision = keeper.router.decide(RunFacts("etl", "ws", "f", sorted(first)[0]))
    assert "rollout at 25% (step 2 of 4)" in decision.reason

    assert keeper.check() == [], "the evidence of the last step does not count at this one"


def test_worse_rolls_the_rule_back_and_a_reset_resumes_it(
    store: Store, keeper: RolloutKeeper
) -> None:
    guards = GuardKeeper(keeper.router, keeper.routing)
    at_step(store, prefect_seconds=40.0)
    assert keeper.check() == ["canary"]

    assert keeper.router.tripped.keys() == {"canary"}
    assert on_prefect(keeper.router) == set(), "rolled back: every run goes to rq"
    trip = keeper.routing.tripped_guards()["canary"]
    assert trip.reason.startswith("rollout at 5% (step 1 of 4): prefect is worse than rq")
    assert actions(keeper)[-1] == ("rolled_back", 5, "gateway")
    assert keeper.router.rollouts["canary"].percent == 5, "a rollback does not move the step"
    assert keeper.check() == [], "a rolled-back rollout is not judged"

    assert guards.reset("canary", by="alice")
    assert on_prefect(keeper.router), "the rule routes as written again, at its step"
    assert keeper.check() == [], "the evidence before the reset no longer counts"


def test_pause_resume_and_pin_are_recorded_with_who_did_them(
    store: Store, keeper: RolloutKeeper
) -> None:
    keeper.pause("canary", by="key-ops (alice)")
    at_step(store)
    assert keeper.check() == [], "a paused rollout holds on any evidence"
    with pytest.raises(RolloutConflictError, match="already paused"):
        keeper.pause("canary", by="bob")

    keeper.resume("canary", by="bob")
    assert keeper.check() == ["canary"], "resumed, it advances on the evidence gathered"

    row = keeper.pin("canary", by="carol", percent=50)
    assert (row.percent, row.state) == (50, "pinned")
    assert keeper.router.rollouts["canary"].percent == 50
    at_step(store)
    assert keeper.check() == [], "a pinned rollout stays where it was pinned"
    with pytest.raises(RolloutConflictError, match="33% is not a step"):
        keeper.pin("canary", by="carol", percent=33)
    with pytest.raises(NotFoundError, match="rule 'nope' has no steps"):
        keeper.pause("nope", by="carol")

    assert actions(keeper) == [
        ("started", 5, "gateway"),
        ("paused", 5, "key-ops (alice)"),
        ("resumed", 5, "bob"),
        ("advanced", 25, "gateway"),
        ("pinned", 50, "carol"),
    ]


def test_changing_the_steps_under_a_live_rollout_is_reconciled_predictably(
    store: Store, keeper: RolloutKeeper
) -> None:
    at_step(store)
    assert keeper.check() == ["canary"]
    assert keeper.router.rollouts["canary"].percent == 25

    # New steps around the percentage in force: it stays, the next advance goes to 50.
    keeper.router.install(parse_rules(rules("[10, 50, 100]"), source="test"))
    keeper.sync()
    position = keeper.router.rollouts["canary"]
    assert (position.percent, position.step, position.next_step) == (25, None, 50)
    event = keeper.records.events(rule_id="canary")[0]
    assert event.action == "reconciled"
    assert event.reason == (
        "the rules file changed the steps to [10, 50, 100]: the rollout stays at "
        "25% (between steps; next 50%)"
    )
    at_step(store)
    assert keeper.check() == ["canary"]
    assert keeper.router.rollouts["canary"].percent == 50

    # New steps that end below it: it goes down to their last step.
    keeper.router.install(parse_rules(rules("[5, 10]"), source="test"))
    keeper.sync()
    position = keeper.router.rollouts["canary"]
    assert (position.percent, position.state) == (10, RolloutState.COMPLETE)
    assert keeper.records.events(rule_id="canary")[0].reason.endswith(
        "the rollout goes down to 10% and its evidence starts again"
    )
    keeper.sync()
    assert keeper.records.events(rule_id="canary")[0].action == "reconciled", "reconciled once"


def test_two_gateways_share_one_rollout(store: Store, keeper: RolloutKeeper) -> None:
    other = keeper_on(store)
    at_step(store)

    moved = keeper.check() + other.check()

    assert moved == ["canary"], "one gateway advances it; the other finds it advanced"
    assert [a for a, _, _ in actions(keeper)] == ["started", "advanced"]
    other.refresh()
    assert other.router.rollouts["canary"].percent == 25
    assert on_prefect(other.router) == on_prefect(keeper.router)
    other.pause("canary", by="dave")
    keeper.refresh()
    assert keeper.router.rollouts["canary"].state is RolloutState.PAUSED
