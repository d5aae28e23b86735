"""The evidence the judge weighs: each side's finished runs, as samples, from the store.

The guard, promotion, the comparison report and readiness all read runs here and
hand them to :mod:`gateway.reports.judge`, so the four figures (failure rate, queue
wait, execution time, total time) are computed from a run's timestamps in one place
(:meth:`RunSample.of`) whoever asks. A run's "accepted" moment is when its backend
took it (``submitted_at``). Cancelled runs never reach the judge.

Planning goes with the evidence: how many runs a side the judge still needs, and,
at the rate the slower side has been finishing runs, how long that should take.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from backends.model.status import RunStatus
from backends.store.routing_records import RoutingRecords
from gateway.reports.judge import (
    ALL_FIGURES,
    Figure,
    Judgement,
    JudgePolicy,
    RunSample,
    expected_wait,
    judge,
)

__all__ = ["Evidence", "Plan", "TimedRun", "policy_of", "rule_evidence", "sample_of"]

_DEFAULTS = JudgePolicy()


class TimedRun(Protocol):
    """A finished run as the store returns it (either record kind will do)."""

    @property
    def status(self) -> RunStatus: ...
    @property
    def submitted_at(self) -> datetime | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime: ...


def sample_of(run: TimedRun) -> RunSample:
    """The judge's view of one succeeded or failed run."""
    return RunSample.of(
        failed=run.status is RunStatus.FAILED,
        accepted=run.submitted_at,
        started=run.started_at,
        finished=run.finished_at,
    )


class _Margins(Protocol):
    """A rules file's guard or promote block: the margins it sets (None: the default)."""

    @property
    def confidence(self) -> float: ...
    @property
    def max_failure_rate_increase(self) -> float | None: ...
    @property
    def min_runs(self) -> int: ...


def policy_of(block: _Margins, *, time_ratio: float | None) -> JudgePolicy:
    """The judge's policy for a guard or promote block of the rules file."""
    increase = block.max_failure_rate_increase
    return JudgePolicy(
        confidence=block.confidence,
        max_failure_increase=_DEFAULTS.max_failure_increase if increase is None else increase,
        max_time_ratio=_DEFAULTS.max_time_ratio if time_ratio is None else time_ratio,
        min_runs=block.min_runs,
    )


@dataclass(frozen=True)
class Plan:
    """What an inconclusive judgement still needs, at the current run rate."""

    more_runs: int | None  # more runs a side; None: no decision in sight; 0: decided
    runs_per_hour: float  # on the slower side, over the evidence's span
    wait: timedelta | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "more_runs": self.more_runs,
            "runs_per_hour": round(self.runs_per_hour, 3),
            "expected_seconds": None if self.wait is None else round(self.wait.total_seconds()),
        }

    def describe(self) -> str:
        """``about 90 more runs a side, about 1.5 h at 60.0 runs/h``."""
        if self.more_runs == 0:
            return "decided"
        if self.more_runs is None:
            return "no decision in sight at the current rates"
        text = f"about {self.more_runs} more runs a side"
        if self.wait is None:
            return text + " (no runs are finishing to estimate a time)"
        hours = self.wait.total_seconds() / 3_600
        when = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"
        return text + f", about {when} at {self.runs_per_hour:.1f} runs/h"


@dataclass(frozen=True)
class Evidence:
    """The finished runs of each side, in finish order, between ``since`` and ``until``."""

    candidate: str
    baseline: str
    candidate_runs: tuple[RunSample, ...]
    baseline_runs: tuple[RunSample, ...]
    since: datetime
    until: datetime

    @classmethod
    def of(
        cls,
        runs: Iterable[tuple[str, RunSample]],
        *,
        candidate: str,
        baseline: str,
        since: datetime,
        until: datetime,
    ) -> Evidence:
        """From (backend, sample) pairs in finish order; other backends are left out."""
        sides: dict[str, list[RunSample]] = {candidate: [], baseline: []}
        for backend, sample in runs:
            side = sides.get(backend)
            if side is not None:
                side.append(sample)
        return cls(
            candidate,
            baseline,
            tuple(sides[candidate]),
            tuple(sides[baseline]),
            since,
            until,
        )

    def judge(
        self, *, watch: Collection[Figure | str] = ALL_FIGURES, policy: JudgePolicy | None = None
    ) -> Judgement:
        return judge(self.candidate_runs, self.baseline_runs, watch=watch, policy=policy)

    @property
    def runs_per_hour(self) -> float:
        """Runs finished per hour on the slower side: what bounds how fast pairs come."""
        hours = (self.until - self.since).total_seconds() / 3_600
        if hours <= 0:
            return 0.0
        return min(len(self.candidate_runs), len(self.baseline_runs)) / hours

    def plan(self, judgement: Judgement) -> Plan:
        rate = self.runs_per_hour
        return Plan(judgement.more_runs, rate, expected_wait(judgement.more_runs, rate))

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "baseline": self.baseline,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
        }


def rule_evidence(
    records: RoutingRecords,
    *,
    rule_id: str,
    candidate: str,
    baseline: str,
    since: datetime,
    until: datetime,
    accepted_since: bool = False,
) -> Evidence:
    """The finished runs of the workflows ``rule_id`` routed, since ``since``, by side
    (with ``accepted_since``, only runs also accepted since then)."""
    runs = records.finished_runs_of_rule(
        rule_id=rule_id, since=since, created_since=since if accepted_since else None
    )
    return Evidence.of(
        ((run.backend, sample_of(run)) for run in runs),
        candidate=candidate,
        baseline=baseline,
        since=since,
        until=until,
    )
