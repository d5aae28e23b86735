"""The comparison report: the same figures for RQ and Prefect, per workflow, and the judge's answer.

Everything here is computed from figway's own records (no Prometheus), with
these definitions, which the command's help and ``docs/operations.md`` repeat:

- Only client runs count (shadow runs never do), and a run counts when it
  finished in the window: ``--since`` (an ISO time, or a duration back from
  now such as ``24h`` or ``7d``) up to now.
- ``runs`` are the runs judged: succeeded plus failed. Cancelled runs are
  counted apart and judged in nothing (a kill is nobody's fault).
- The four figures are the judge's (``gateway/reports/judge.py``, defined there
  once): failure rate = failed / (succeeded + failed); queue wait = accepted (the
  backend took the run) to its first node running, for judged runs that started;
  execution time = first node running to finished, and total time = accepted to
  finished, for succeeded runs. Percentiles are nearest-rank.
- Retries per run = the sum over a run's nodes of max(attempts - 1, 0),
  divided by ``runs``.
- Shadow mismatch rate = mismatched / compared, of the shadow comparisons made
  in the window, credited to the shadow's backend (the one being tried out).

The answer on each workflow is the judge's, Prefect (the candidate) against RQ
(the baseline), over the window's runs in the order they finished: ``worse``,
``not_worse`` or ``inconclusive``, on the watched figures, with every figure's
estimate and confidence bounds side by side, the runs each side still needs and,
at the window's run rate, how long that should take. Shadow mismatches are
reported beside the answer but do not decide it: a mismatch may come from the
workflow itself (a timestamp in an output), which only a person can tell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backends.model.backend_names import LEGACY_BACKEND, SUCCESSOR_BACKEND
from backends.model.status import RunStatus
from backends.store.comparison_records import FinishedRunRecord, Reports
from backends.store.routing_records import RoutingRecords, ShadowCount
from gateway.reports.evidence import Evidence, sample_of
from gateway.reports.judge import (
    FINEST_FAILURE_INCREASE,
    FINEST_TIME_RATIO,
    Answer,
    Figure,
    JudgePolicy,
    RunSample,
)
from gateway.routing.rules import DEFAULT_WATCH, FigureName

__all__ = [
    "BASELINE",
    "CANDIDATE",
    "BackendReport",
    "ComparisonReport",
    "JudgementOut",
    "Percentiles",
    "ShadowFigures",
    "Thresholds",
    "WorkflowReport",
    "build_report",
    "comparison_report",
    "format_seconds",
    "parse_since",
    "percentile",
]

#: The backend being tried out, and the one it is held to.
CANDIDATE = SUCCESSOR_BACKEND
BASELINE = LEGACY_BACKEND

#: The window when none is given.
DEFAULT_SINCE = "7d"

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` of 0.95 is p95) of a non-empty sequence.

    >>> percentile([5, 1, 4, 2, 3], 0.5), percentile(list(range(1, 101)), 0.95)
    (3, 95)
    """
    ordered = sorted(values)
    # Rounded first: 0.07 * 100 is 7.000000000000001, whose ceiling would skip a rank.
    return ordered[max(0, math.ceil(round(share * len(ordered), 9)) - 1)]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


_JUDGE = JudgePolicy()


class Thresholds(_Out):
    """What the judge holds Prefect to; stated in every report."""

    min_runs: int = Field(
        default=_JUDGE.min_runs,
        ge=1,
        le=1_000_000,
        description="Judged runs (succeeded + failed) needed on each backend before an answer.",
    )
    failure_margin_points: float = Field(
        default=_JUDGE.max_failure_increase * 100,
        ge=FINEST_FAILURE_INCREASE * 100,
        lt=100,
        description="The failure-rate increase that matters, in percentage points (5: Prefect "
        "failing 5 points more often than RQ).",
    )
    max_ratio: float = Field(
        default=_JUDGE.max_time_ratio,
        ge=FINEST_TIME_RATIO,
        le=100,
        description="The slowdown that matters for a time figure (1.2: more than 1.2 times "
        "slower than RQ).",
    )
    confidence: float = Field(
        default=_JUDGE.confidence,
        ge=0.5,
        le=0.999,
        description="Each answer is wrong at most 1 - confidence of the time, however often "
        "the report is asked.",
    )
    watch: list[FigureName] = Field(
        default_factory=lambda: list(DEFAULT_WATCH),
        min_length=1,
        description="The figures that decide the answer; every figure is shown.",
    )

    def policy(self) -> JudgePolicy:
        return JudgePolicy(
            confidence=self.confidence,
            max_failure_increase=self.failure_margin_points / 100,
            max_time_ratio=self.max_ratio,
            min_runs=self.min_runs,
        )


class Percentiles(_Out):
    """Nearest-rank percentiles in seconds, of ``count`` values (null when there are none)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls(count=0, p50=None, p95=None, p99=None)
        values.sort()  # sorted once here; percentile() sorts again, cheaply, on sorted input

        def at(share: float) -> float:
            return round(percentile(values, share), 3)

        return cls(count=len(values), p50=at(0.50), p95=at(0.95), p99=at(0.99))


class ShadowFigures(_Out):
    """Shadow comparisons whose shadow ran on this backend."""

    compared: int
    mismatched: int
    mismatch_rate: float | None = Field(description="mismatched / compared; null if none.")


class BackendReport(_Out):
    backend: str
    runs: int = Field(description="Judged runs: succeeded + failed.")
    succeeded: int
    failed: int
    cancelled: int = Field(description="Counted, never judged.")
    failure_rate: float | None = Field(description="failed / runs; null without runs.")
    queue_wait_seconds: Percentiles = Field(
        description="Accepted to first node running, judged runs that started."
    )
    execution_time_seconds: Percentiles = Field(
        description="First node running to finished, succeeded runs."
    )
    total_time_seconds: Percentiles = Field(description="Accepted to finished, succeeded runs.")
    retries: int = Field(description="Sum over the runs' nodes of max(attempts - 1, 0).")
    retries_per_run: float | None = Field(description="retries / runs; null without runs.")
    shadow: ShadowFigures


class JudgementOut(_Out):
    """The judge's answer on one workflow, with all four figures side by side."""

    answer: Answer
    candidate: str
    baseline: str
    watched: list[Figure]
    candidate_runs: int
    baseline_runs: int
    more_runs: int | None = Field(
        description="For an inconclusive answer, about how many more runs a side should "
        "decide; null when no decision is in sight; 0 when decided."
    )
    runs_per_hour: float = Field(description="Runs finished per hour in the window, slower side.")
    expected_seconds: float | None = Field(
        description="How long ``more_runs`` should take at ``runs_per_hour``."
    )
    figures: dict[str, dict[str, Any]] = Field(
        description="All four figures by name, watched or not: answer, estimate, bounds and "
        "margin (points for the failure rate, candidate / baseline ratios for times), runs "
        "and pairs, each side's value (failure rate in percent, or median seconds), "
        "more_runs, and the figure's text (docs/decisions.md)."
    )
    sentence: str = Field(description="One sentence for a change ticket.")
    shadow: str | None = Field(
        description="Shadow mismatches on the candidate: reported, not judged."
    )


class WorkflowReport(_Out):
    workflow_id: str
    backends: list[BackendReport] = Field(description="rq first, then prefect, then any other.")
    judgement: JudgementOut


class ComparisonReport(_Out):
    since: datetime = Field(description="Runs that finished at or after this time count.")
    until: datetime = Field(description="When the report was made.")
    workflow_filter: list[str] = Field(description="The workflows asked for; empty for all.")
    thresholds: Thresholds
    workflows: list[WorkflowReport]


def parse_since(value: str, *, now: datetime) -> datetime:
    """The window's start: an ISO time (UTC when it has no zone) or a duration back from now.

    >>> now = datetime(2024, 5, 8, tzinfo=UTC)
    >>> parse_since("7d", now=now).isoformat(), parse_since("1d12h", now=now).isoformat()
    ('2024-05-01T00:00:00+00:00', '2024-05-06T12:00:00+00:00')
    >>> parse_since("2024-05-01T06:00:00+02:00", now=now).isoformat()
    '2024-05-01T04:00:00+00:00'
    """
    text = value.strip().lower()
    if _DURATION.fullmatch(text):
        seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(text))
        if seconds == 0:
            raise ValueError(f"{value!r} is an empty window; give a duration such as 24h or 7d")
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{value!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (such as 30m, 24h, 7d, 2w or 1d12h) nor an ISO "
            "time (such as 2024-05-01 or 2024-05-01T06:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise ValueError(f"{value!r} is in the future; the window ends now")
    return moment.astimezone(UTC)


@dataclass
class _Tally:
    """One workflow's runs on one backend, while the records stream past in finish order."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0
    samples: list[RunSample] = field(default_factory=list)

    def add(self, run: FinishedRunRecord) -> None:
        if run.status is RunStatus.CANCELLED:
            self.cancelled += 1
            return
        if run.status is RunStatus.SUCCEEDED:
            self.succeeded += 1
        elif run.status is RunStatus.FAILED:
            self.failed += 1
        else:  # not finished: the store never returns one
            return
        self.retries += run.retries
        self.samples.append(sample_of(run))

    def _figure(self, figure: Figure) -> Percentiles:
        values = [v for v in (s.value(figure) for s in self.samples) if v is not None]
        return Percentiles.of(values)

    def report(self, backend: str, shadow: ShadowCount | None) -> BackendReport:
        runs = self.succeeded + self.failed
        compared = shadow.compared if shadow else 0
        mismatched = shadow.mismatched if shadow else 0
        return BackendReport(
            backend=backend,
            runs=runs,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            failure_rate=round(self.failed / runs, 6) if runs else None,
            queue_wait_seconds=self._figure(Figure.QUEUE_WAIT),
            execution_time_seconds=self._figure(Figure.EXECUTION_TIME),
            total_time_seconds=self._figure(Figure.TOTAL_TIME),
            retries=self.retries,
            retries_per_run=round(self.retries / runs, 6) if runs else None,
            shadow=ShadowFigures(
                compared=compared,
                mismatched=mismatched,
                mismatch_rate=round(mismatched / compared, 6) if compared else None,
            ),
        )


def build_report(
    runs: Iterable[FinishedRunRecord],
    shadows: Iterable[ShadowCount],
    *,
    since: datetime,
    until: datetime,
    thresholds: Thresholds,
    workflows: Collection[str] = (),
) -> ComparisonReport:
    """The report on these records (already narrowed to the window and the workflows,
    in the order they finished).

    Every workflow asked for, or seen in the records, gets a row for rq and for
    prefect (zeros when a backend ran none of it) and one for any other backend seen.
    """
    tallies: dict[tuple[str, str], _Tally] = {}
    for run in runs:
        tallies.setdefault((run.workflow_id, run.backend), _Tally()).add(run)
    shadow_of = {(s.workflow_id, s.backend): s for s in shadows}
    names = set(workflows) | {w for w, _ in tallies} | {w for w, _ in shadow_of}
    reports = []
    for workflow_id in sorted(names):
        seen = {b for w, b in (*tallies, *shadow_of) if w == workflow_id}
        order = [BASELINE, CANDIDATE, *sorted(seen - {BASELINE, CANDIDATE})]
        rows = [
            tallies.get((workflow_id, backend), _Tally()).report(
                backend, shadow_of.get((workflow_id, backend))
            )
            for backend in order
        ]
        evidence = Evidence(
            CANDIDATE,
            BASELINE,
            tuple(tallies.get((workflow_id, CANDIDATE), _Tally()).samples),
            tuple(tallies.get((workflow_id, BASELINE), _Tally()).samples),
            since,
            until,
        )
        reports.append(
            WorkflowReport(
                workflow_id=workflow_id,
                backends=rows,
                judgement=judge_workflow(evidence, thresholds, candidate_row=rows[1]),
            )
        )
    return ComparisonReport(
        since=since,
        until=until,
        workflow_filter=sorted(set(workflows)),
        thresholds=thresholds,
        workflows=reports,
    )


def judge_workflow(
    evidence: Evidence, thresholds: Thresholds, *, candidate_row: BackendReport
) -> JudgementOut:
    """The judge on one workflow's window, with its plan and the shadow note."""
    judgement = evidence.judge(watch=thresholds.watch, policy=thresholds.policy())
    plan = evidence.plan(judgement)
    shadow = candidate_row.shadow
    note = None
    if shadow.mismatched:
        # Not judged (a mismatch may be the workflow's own nondeterminism), but never hidden.
        note = (
            f"{shadow.mismatched} of {shadow.compared} shadow comparison(s) on "
            f"{candidate_row.backend} differed"
        )
    values: dict[str, Any] = judgement.as_dict(
        candidate=evidence.candidate, baseline=evidence.baseline
    )
    values.pop("policy")
    return JudgementOut(
        **values,
        candidate=evidence.candidate,
        baseline=evidence.baseline,
        runs_per_hour=round(plan.runs_per_hour, 3),
        expected_seconds=None if plan.wait is None else round(plan.wait.total_seconds()),
        shadow=note,
    )


def comparison_report(
    reports: Reports,
    routing: RoutingRecords,
    *,
    since: datetime,
    now: datetime,
    thresholds: Thresholds,
    workflows: Collection[str] = (),
) -> ComparisonReport:
    """Read the window's records and build the report (what the command and the route call)."""
    return build_report(
        reports.finished_runs(since=since, workflows=workflows),
        routing.shadow_counts(since=since, workflows=workflows),
        since=since,
        until=now,
        thresholds=thresholds,
        workflows=workflows,
    )


def format_seconds(value: float) -> str:
    """A duration a person reads at a glance.

    >>> format_seconds(0.0123), format_seconds(12.34), format_seconds(754), format_seconds(9000)
    ('12ms', '12.3s', '12.6m', '2.50h')
    """
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3_600:
        return f"{value / 60:.1f}m"
    return f"{value / 3_600:.2f}h"
