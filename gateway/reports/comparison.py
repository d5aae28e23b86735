"""The comparison report: the same figures for RQ and Prefect, per workflow, and a verdict.

Everything here is computed from figway's own records (no Prometheus), with
these definitions, which the command's help and ``docs/operations.md`` repeat:

- Only client runs count (shadow runs never do), and a run counts when it
  finished in the window: ``--since`` (an ISO time, or a duration back from
  now such as ``24h`` or ``7d``) up to now.
- ``runs`` are the runs judged: succeeded plus failed. Cancelled runs are
  counted apart and judged in nothing (a kill is nobody's fault).
- Failure rate = failed / (succeeded + failed).
- Queue wait = submitted (the backend accepted the run) to started (its first
  node running); a worker may start a node before the submission is recorded,
  and that wait counts as 0. Duration = started to finished. Both only for
  judged runs that started. Percentiles are nearest-rank.
- Retries per run = the sum over a run's nodes of max(attempts - 1, 0),
  divided by ``runs``.
- Shadow mismatch rate = mismatched / compared, of the shadow comparisons made
  in the window, credited to the shadow's backend (the one being tried out).

The verdict holds Prefect (the candidate) against RQ (the baseline) on the
same workflow: ``not_enough_data`` while either has fewer than ``min_runs``
runs; ``worse`` when Prefect's failure rate is more than
``failure_margin_points`` percentage points above RQ's, or its p95 duration
more than ``p95_ratio`` times RQ's; otherwise ``better``: Prefect does at
least as well as RQ within the thresholds, the evidence to move on. Shadow
mismatches are reported beside the verdict (and named in its reason) but do
not decide it: a mismatch may come from the workflow itself (a timestamp in an
output), which only a person can tell.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from backends.model.backend_names import LEGACY_BACKEND, SUCCESSOR_BACKEND
from backends.model.status import RunStatus
from backends.store.comparison_records import FinishedRunRecord, Reports
from backends.store.routing_records import RoutingRecords, ShadowCount
from gateway.routing.guard import percentile

__all__ = [
    "BASELINE",
    "CANDIDATE",
    "BackendReport",
    "ComparisonReport",
    "Percentiles",
    "ShadowFigures",
    "Thresholds",
    "Verdict",
    "VerdictReport",
    "WorkflowReport",
    "build_report",
    "comparison_report",
    "format_seconds",
    "judge",
    "parse_since",
]

#: The backend being tried out, and the one it is held to.
CANDIDATE = SUCCESSOR_BACKEND
BASELINE = LEGACY_BACKEND

#: The window when none is given.
DEFAULT_SINCE = "7d"

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")


class Verdict(StrEnum):
    BETTER = "better"  # Prefect at least as good as RQ within the thresholds
    WORSE = "worse"  # Prefect beyond a threshold
    NOT_ENOUGH_DATA = "not_enough_data"  # fewer than min_runs on either backend


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Thresholds(_Out):
    """What a verdict is judged by; stated in every report."""

    min_runs: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Judged runs (succeeded + failed) needed on each backend for a verdict.",
    )
    failure_margin_points: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="Prefect is worse when its failure rate exceeds RQ's by more than this "
        "many percentage points.",
    )
    p95_ratio: float = Field(
        default=1.5,
        ge=1,
        le=1_000,
        description="Prefect is worse when its p95 duration exceeds RQ's times this.",
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
    queue_wait_seconds: Percentiles = Field(description="Submitted to first node running.")
    duration_seconds: Percentiles = Field(description="First node running to finished.")
    retries: int = Field(description="Sum over the runs' nodes of max(attempts - 1, 0).")
    retries_per_run: float | None = Field(description="retries / runs; null without runs.")
    shadow: ShadowFigures


class VerdictReport(_Out):
    verdict: Verdict
    candidate: str
    baseline: str
    reason: str
    failure_rate_difference_points: float | None = Field(
        description="Candidate's failure rate minus the baseline's, in percentage points."
    )
    p95_duration_ratio: float | None = Field(
        description="Candidate's p95 duration over the baseline's; null when either is unknown "
        "or the baseline's is 0."
    )


class WorkflowReport(_Out):
    workflow_id: str
    backends: list[BackendReport] = Field(description="rq first, then prefect, then any other.")
    verdict: VerdictReport


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
    """What one workflow's runs on one backend add up to, while the records stream past."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0
    waits: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

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
        if run.started_at is None:
            return  # failed before any node ran: no wait, no duration
        self.durations.append(max(0.0, (run.finished_at - run.started_at).total_seconds()))
        if run.submitted_at is not None:
            self.waits.append(max(0.0, (run.started_at - run.submitted_at).total_seconds()))

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
            queue_wait_seconds=Percentiles.of(self.waits),
            duration_seconds=Percentiles.of(self.durations),
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
    """The report on these records (already narrowed to the window and the workflows).

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
        reports.append(
            WorkflowReport(
                workflow_id=workflow_id,
                backends=rows,
                verdict=judge(candidate=rows[1], baseline=rows[0], thresholds=thresholds),
            )
        )
    return ComparisonReport(
        since=since,
        until=until,
        workflow_filter=sorted(set(workflows)),
        thresholds=thresholds,
        workflows=reports,
    )


def judge(
    *, candidate: BackendReport, baseline: BackendReport, thresholds: Thresholds
) -> VerdictReport:
    """Prefect against RQ on one workflow: better, worse, or not enough data, and why."""
    new, old = candidate, baseline
    new_rate = new.failed / new.runs if new.runs else None
    old_rate = old.failed / old.runs if old.runs else None
    difference = None
    if new_rate is not None and old_rate is not None:
        # Rounded: 6/20 - 5/20 is 4.999999999999998 points, which must equal a 5-point margin.
        difference = round((new_rate - old_rate) * 100, 6)
    new_p95, old_p95 = new.duration_seconds.p95, old.duration_seconds.p95
    ratio = round(new_p95 / old_p95, 6) if new_p95 is not None and old_p95 else None

    def verdict(value: Verdict, reason: str) -> VerdictReport:
        return VerdictReport(
            verdict=value,
            candidate=new.backend,
            baseline=old.backend,
            reason=reason,
            failure_rate_difference_points=difference,
            p95_duration_ratio=ratio,
        )

    if (
        new_rate is None
        or old_rate is None
        or difference is None
        or min(new.runs, old.runs) < thresholds.min_runs
    ):
        return verdict(
            Verdict.NOT_ENOUGH_DATA,
            f"{new.runs} judged run(s) on {new.backend} and {old.runs} on {old.backend}; "
            f"a verdict needs {thresholds.min_runs} on each",
        )
    margin = thresholds.failure_margin_points
    failure = (
        f"failure rate {new_rate:.1%} on {new.backend} against {old_rate:.1%} "
        f"on {old.backend} (allowed: {margin:g} points more)"
    )
    if ratio is not None and new_p95 is not None and old_p95 is not None:
        timing = (
            f"p95 duration {format_seconds(new_p95)} on {new.backend} against "
            f"{format_seconds(old_p95)} on {old.backend}, {ratio:.2f}x "
            f"(allowed: {thresholds.p95_ratio:g}x)"
        )
    else:
        timing = f"p95 duration not compared (no run started on one side, or {old.backend}'s is 0)"
    worse = []
    if difference > margin:
        worse.append(failure)
    if ratio is not None and ratio > thresholds.p95_ratio:
        worse.append(timing)
    value = Verdict.WORSE if worse else Verdict.BETTER
    reasons = worse if worse else [failure, timing]
    if new.shadow.mismatched:
        # Not judged (a mismatch may be the workflow's own nondeterminism), but never hidden.
        reasons.append(
            f"{new.shadow.mismatched} of {new.shadow.compared} shadow comparison(s) on "
            f"{new.backend} differed"
        )
    return verdict(value, "; ".join(reasons))


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
