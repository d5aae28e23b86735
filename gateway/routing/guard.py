"""Guards: roll a rule back when the judge finds its new backend worse than the old one.

A guard holds the rule's backend against its ``rollback_to`` on the same workflows
(those its rule routed in the window), over the runs that finished in the window,
on the figures it watches (``watch``; the failure rate and execution time unless it
says), with the margins it sets. The judge (``gateway/reports/judge.py``) answers
worse, not worse or inconclusive with anytime-valid tests, so a guard consulted
every round does not roll back on noise; below ``min_runs`` runs a side it never
answers. A trip is recorded with the judgement and stays in force, for every
gateway, until a person resets it; after a reset only runs that finish later count,
so old evidence cannot trip it again at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backends.store import utcnow
from backends.store.routing_records import GuardTripView, RoutingRecords
from gateway.reports.evidence import Evidence, Plan, policy_of, rule_evidence
from gateway.reports.judge import Answer, Judgement, JudgePolicy
from gateway.routing.router import Router
from gateway.routing.rules import Guard, Rule

__all__ = ["GuardKeeper", "GuardVerdict", "guard_policy"]

log = logging.getLogger(__name__)


def guard_policy(guard: Guard) -> JudgePolicy:
    """The judge's policy for a guard of the rules file."""
    return policy_of(guard, time_ratio=guard.time_ratio)


@dataclass(frozen=True)
class GuardVerdict:
    """The judge's answer on a guard's window, with the evidence and what it still needs."""

    judgement: Judgement
    evidence: Evidence
    plan: Plan
    window_hours: float

    @property
    def trip(self) -> bool:
        return self.judgement.answer is Answer.WORSE

    @property
    def since(self) -> datetime:
        return self.evidence.since

    @property
    def reason(self) -> str:
        """The judgement's sentence, for the log, the trip and a change ticket."""
        return self.judgement.sentence(
            candidate=self.evidence.candidate, baseline=self.evidence.baseline
        )

    def figures(self) -> dict[str, Any]:
        return {
            **self.judgement.as_dict(
                candidate=self.evidence.candidate, baseline=self.evidence.baseline
            ),
            **self.evidence.as_dict(),
            "window_hours": self.window_hours,
            "plan": self.plan.as_dict(),
        }


class GuardKeeper:
    """Evaluates every guard of the rules in force and keeps the router's trips current."""

    def __init__(self, router: Router, records: RoutingRecords) -> None:
        self.router = router
        self.records = records

    def judge_rule(self, rule: Rule, *, now: datetime | None = None) -> GuardVerdict:
        """The guard's verdict on the runs it would read now (trips nothing)."""
        guard = rule.guard
        assert guard is not None
        now = now or utcnow()
        since = now - timedelta(hours=guard.window_hours)
        last_reset = self.records.last_reset(rule_id=rule.id)
        if last_reset is not None and last_reset > since:
            since = last_reset
        evidence = rule_evidence(
            self.records,
            rule_id=rule.id,
            candidate=rule.backend,
            baseline=guard.rollback_to,
            since=since,
            until=now,
        )
        judgement = evidence.judge(watch=guard.watched, policy=guard_policy(guard))
        return GuardVerdict(judgement, evidence, evidence.plan(judgement), guard.window_hours)

    def status(self) -> list[tuple[Rule, GuardVerdict]]:
        """Every guard of the rules in force with its current evidence: how close, how long."""
        return [
            (rule, self.judge_rule(rule)) for rule in self.router.table.rules.rules if rule.guard
        ]

    def check(self, *, now: datetime | None = None) -> list[str]:
        """Evaluate each untripped guard; returns the rule ids that tripped in this round."""
        now = now or utcnow()
        table = self.router.table
        tripped_now: list[str] = []
        for rule in table.rules.rules:
            guard = rule.guard
            if guard is None or rule.id in self.router.tripped:
                continue
            verdict = self.judge_rule(rule, now=now)
            if not verdict.trip:
                continue
            if self.records.trip_guard(
                rule_id=rule.id,
                rules_version=table.version,
                reason=verdict.reason,
                figures=verdict.figures(),
            ):
                tripped_now.append(rule.id)
                log.warning(
                    "guard of rule %r tripped: %s Its runs go to %s until reset "
                    "(figway rules guard-reset %s)",
                    rule.id,
                    verdict.reason,
                    guard.rollback_to,
                    rule.id,
                )
        self.refresh()
        return tripped_now

    def refresh(self) -> dict[str, GuardTripView]:
        """Load the trips in force (any gateway may have tripped or reset one)."""
        trips = self.records.tripped_guards()
        self.router.set_tripped(
            {
                rule_id: f"at {trip.tripped_at:%Y-%m-%d %H:%M:%S} UTC: {trip.reason}"
                for rule_id, trip in trips.items()
            }
        )
        return trips

    def reset(self, rule_id: str, *, by: str) -> bool:
        """Put a tripped rule back in force; False when its guard was not tripped."""
        reset = self.records.reset_guard(rule_id=rule_id, by=by)
        self.refresh()
        if reset:
            log.warning("guard of rule %r reset by %s", rule_id, by)
        return reset
