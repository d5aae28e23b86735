"""Guards: roll a rule back when its new backend does worse than the old one.

A guard compares the two backends on the same workflows (those its rule
routed in the window) over runs that finished in the window: the failure rate
(failed out of succeeded plus failed; a kill is nobody's fault) and p95 run
time from accepted to finished. It never trips on less than ``min_runs``
finished runs on each side. A trip is recorded with its figures and stays in
force, for every gateway, until a person resets it; after a reset only runs
that finish later count, so old evidence cannot trip it again at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backends.model.status import RunStatus
from backends.store import utcnow
from backends.store.routing_records import FinishedRun, GuardTripView, RoutingRecords
from gateway.routing.router import Router
from gateway.routing.rules import Guard, Rule

__all__ = ["BackendFigures", "GuardKeeper", "GuardVerdict", "judge", "percentile"]

log = logging.getLogger(__name__)


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` of 0.95 is p95) of a non-empty sequence.

    >>> percentile([5, 1, 4, 2, 3], 0.5), percentile(list(range(1, 101)), 0.95)
    (3, 95)
    """
    ordered = sorted(values)
    # Rounded first: 0.07 * 100 is 7.000000000000001, whose ceiling would skip a rank.
    return ordered[max(0, math.ceil(round(share * len(ordered), 9)) - 1)]


@dataclass(frozen=True)
class BackendFigures:
    backend: str
    runs: int
    failed: int
    p95_seconds: float | None

    @property
    def failure_rate(self) -> float:
        return self.failed / self.runs if self.runs else 0.0

    @classmethod
    def of(cls, backend: str, runs: Sequence[FinishedRun]) -> BackendFigures:
        # A kill is nobody's fault: only runs that succeeded or failed are judged.
        judged = (RunStatus.SUCCEEDED, RunStatus.FAILED)
        mine = [run for run in runs if run.backend == backend and run.status in judged]
        return cls(
            backend=backend,
            runs=len(mine),
            failed=sum(run.status is RunStatus.FAILED for run in mine),
            p95_seconds=percentile([run.seconds for run in mine], 0.95) if mine else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "runs": self.runs,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 6),
            "p95_seconds": None if self.p95_seconds is None else round(self.p95_seconds, 3),
        }


@dataclass(frozen=True)
class GuardVerdict:
    trip: bool
    reason: str
    guarded: BackendFigures
    baseline: BackendFigures
    thresholds: dict[str, Any] = field(default_factory=dict)

    since: datetime | None = None  # the oldest finish that counted

    def figures(self) -> dict[str, Any]:
        return {
            "guarded": self.guarded.as_dict(),
            "baseline": self.baseline.as_dict(),
            "thresholds": self.thresholds,
            "since": None if self.since is None else self.since.isoformat(),
        }


def judge(guard: Guard, *, guarded_backend: str, runs: Sequence[FinishedRun]) -> GuardVerdict:
    """Whether the guard trips on these finished runs, with the figures and why."""
    new = BackendFigures.of(guarded_backend, runs)
    old = BackendFigures.of(guard.rollback_to, runs)
    thresholds = {
        "min_runs": guard.min_runs,
        "window_hours": guard.window_hours,
        "max_failure_rate_increase": guard.max_failure_rate_increase,
        "max_p95_ratio": guard.max_p95_ratio,
    }
    if new.runs < guard.min_runs or old.runs < guard.min_runs:
        reason = (
            f"not enough data: {new.runs} finished run(s) on {new.backend} and {old.runs} on "
            f"{old.backend}; the guard needs {guard.min_runs} on each"
        )
        return GuardVerdict(False, reason, new, old, thresholds)
    worse: list[str] = []
    increase = guard.max_failure_rate_increase
    if increase is not None and new.failure_rate - old.failure_rate > increase:
        worse.append(
            f"failure rate {new.failure_rate:.1%} on {new.backend} against "
            f"{old.failure_rate:.1%} on {old.backend} (allowed: {increase:.1%} points more)"
        )
    ratio = guard.max_p95_ratio
    if (
        ratio is not None
        and new.p95_seconds is not None
        and old.p95_seconds
        and new.p95_seconds / old.p95_seconds > ratio
    ):
        worse.append(
            f"p95 {new.p95_seconds:.2f}s on {new.backend} against {old.p95_seconds:.2f}s on "
            f"{old.backend} (allowed: {ratio:g}x)"
        )
    if worse:
        return GuardVerdict(True, "; ".join(worse), new, old, thresholds)
    return GuardVerdict(False, f"{new.backend} within the guard's limits", new, old, thresholds)


class GuardKeeper:
    """Evaluates every guard of the rules in force and keeps the router's trips current."""

    def __init__(self, router: Router, records: RoutingRecords) -> None:
        self.router = router
        self.records = records

    def judge_rule(self, rule: Rule, *, now: datetime | None = None) -> GuardVerdict:
        """The guard's verdict on the runs it would read now (trips nothing)."""
        assert rule.guard is not None
        now = now or utcnow()
        since = now - timedelta(hours=rule.guard.window_hours)
        last_reset = self.records.last_reset(rule_id=rule.id)
        if last_reset is not None and last_reset > since:
            since = last_reset
        runs = self.records.finished_runs_of_rule(rule_id=rule.id, since=since)
        verdict = judge(rule.guard, guarded_backend=rule.backend, runs=runs)
        return dataclasses.replace(verdict, since=since)

    def status(self) -> list[tuple[Rule, GuardVerdict]]:
        """Every guard of the rules in force with its current figures: is it armed, how close."""
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
            figures = verdict.figures()
            if self.records.trip_guard(
                rule_id=rule.id, rules_version=table.version, reason=verdict.reason, figures=figures
            ):
                tripped_now.append(rule.id)
                log.warning(
                    "guard of rule %r tripped: %s; its runs go to %s until reset "
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
