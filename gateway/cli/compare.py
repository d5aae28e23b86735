"""``figway compare``: RQ against Prefect per workflow, from figway's own records."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import click

from backends.store import utcnow
from backends.store.comparison_records import Reports
from backends.store.routing_records import RoutingRecords
from gateway.cli.support import migrated_engine, or_exit, settings_or_exit
from gateway.reports.comparison import (
    BASELINE,
    CANDIDATE,
    DEFAULT_SINCE,
    BackendReport,
    ComparisonReport,
    Thresholds,
    Verdict,
    comparison_report,
    format_seconds,
    parse_since,
)

__all__ = ["compare", "render_table"]

_DEFAULTS = Thresholds()

_LEGEND = (
    "runs = succeeded + failed (cancelled runs are not judged); wait = submitted to first node "
    "running; dur = first node running to finished; percentiles are nearest-rank; retries/run = "
    "extra node attempts per run; shadow diffs = mismatched/compared shadow comparisons on that "
    "backend. `figway compare --help` has the full definitions."
)

_VERDICT_TEXT = {
    Verdict.BETTER: "better",
    Verdict.WORSE: "WORSE",
    Verdict.NOT_ENOUGH_DATA: "not enough data",
}


@click.command("compare")
@click.option(
    "--since",
    default=DEFAULT_SINCE,
    show_default=True,
    help="Runs that finished since: an ISO time (UTC unless it has a zone) or a duration "
    "back from now (30m, 24h, 7d, 2w, 1d12h).",
)
@click.option(
    "--workflow", "workflows", multiple=True, help="Only this workflow (repeat the option)."
)
@click.option(
    "--min-runs",
    type=click.IntRange(1, 1_000_000),
    default=_DEFAULTS.min_runs,
    show_default=True,
    help="Judged runs (succeeded + failed) needed on each backend for a verdict.",
)
@click.option(
    "--failure-margin",
    type=click.FloatRange(0, 100),
    default=_DEFAULTS.failure_margin_points,
    show_default=True,
    help="Prefect is worse when its failure rate is more than this many percentage points "
    "above RQ's.",
)
@click.option(
    "--p95-ratio",
    type=click.FloatRange(1, 1_000),
    default=_DEFAULTS.p95_ratio,
    show_default=True,
    help="Prefect is worse when its p95 duration is more than this many times RQ's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compare(
    since: str,
    workflows: tuple[str, ...],
    min_runs: int,
    failure_margin: float,
    p95_ratio: float,
    as_json: bool,
) -> None:
    """RQ against Prefect, per workflow: runs, failures, timings, retries, shadows, verdict.

    Reads figway's own records (no Prometheus needed); the gateway serves the
    same report at GET /routing/compare.

    \b
    Definitions:
      - Only client runs count (never shadow runs), when they finished in the
        window (--since up to now).
      - runs: judged runs, succeeded + failed. Cancelled runs are counted
        apart and judged in nothing.
      - failure rate: failed / (succeeded + failed).
      - queue wait: submitted to the first node running (a wait below 0, a
        node started before the submission was recorded, counts as 0);
        duration: first node running to finished. Both over judged runs that
        started; p50/p95/p99 are nearest-rank.
      - retries per run: sum over a run's nodes of max(attempts - 1, 0) / runs.
      - shadow mismatches: mismatched / compared shadow comparisons made in the
        window, on the shadow's backend (the backend being tried out).

    \b
    Verdict, Prefect against RQ on the same workflow:
      - not enough data: fewer than --min-runs judged runs on either backend;
      - worse: Prefect's failure rate is more than --failure-margin points
        above RQ's, or its p95 duration more than --p95-ratio times RQ's;
      - better: otherwise (Prefect does at least as well within the thresholds).
    """
    settings = settings_or_exit()
    now = utcnow()
    try:
        start = parse_since(since, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from exc
    thresholds = Thresholds(
        min_runs=min_runs, failure_margin_points=failure_margin, p95_ratio=p95_ratio
    )
    engine = migrated_engine(settings)
    try:
        reports = Reports(engine)
        report = or_exit(
            lambda: comparison_report(
                reports,
                RoutingRecords(engine),
                since=start,
                now=now,
                thresholds=thresholds,
                workflows=workflows,
            )
        )
    finally:
        engine.dispose()
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        click.echo(render_table(report), nl=False)


def render_table(report: ComparisonReport) -> str:
    """The report as a person reads it: one block per workflow, its verdict under it."""
    t = report.thresholds
    lines = [
        f"{CANDIDATE} against {BASELINE}: client runs finished from "
        f"{report.since:%Y-%m-%d %H:%M:%S} to {report.until:%Y-%m-%d %H:%M:%S} UTC",
        f"thresholds: a verdict needs {t.min_runs} judged run(s) on each backend; {CANDIDATE} "
        f"is worse when its failure rate is more than {t.failure_margin_points:g} points above "
        f"{BASELINE}'s or its p95 duration more than {t.p95_ratio:g}x {BASELINE}'s",
    ]
    if report.workflow_filter:
        lines.append(f"workflows: {', '.join(report.workflow_filter)}")
    lines.append("")
    if not report.workflows:
        lines.append("no client run finished and no shadow was compared in this window")
        return "\n".join(lines) + "\n"
    header = [
        "workflow / backend",
        "runs",
        "failed",
        "fail%",
        "cancelled",
        "wait p50",
        "wait p95",
        "wait p99",
        "dur p50",
        "dur p95",
        "dur p99",
        "retries/run",
        "shadow diffs",
    ]
    rows: list[list[str] | str] = []
    for workflow in report.workflows:
        if rows:
            rows.append("")
        rows.append(workflow.workflow_id)
        rows.extend(_cells(backend) for backend in workflow.backends)
        verdict = workflow.verdict
        rows.append(f"  verdict: {_VERDICT_TEXT[verdict.verdict]} - {verdict.reason}")
    widths = [len(h) for h in header]
    for row in rows:
        if isinstance(row, list):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines.append(_line(header, widths))
    for row in rows:
        lines.append(row if isinstance(row, str) else _line(row, widths))
    lines.append("")
    lines += textwrap.wrap(_LEGEND, width=100)
    return "\n".join(lines) + "\n"


def _cells(row: BackendReport) -> list[str]:
    shadow = row.shadow
    diffs = "-"
    if shadow.compared and shadow.mismatch_rate is not None:
        diffs = f"{shadow.mismatched}/{shadow.compared} ({shadow.mismatch_rate:.1%})"
    wait, duration = row.queue_wait_seconds, row.duration_seconds
    return [
        f"  {row.backend}",
        str(row.runs),
        str(row.failed),
        "-" if row.failure_rate is None else f"{row.failure_rate:.1%}",
        str(row.cancelled),
        *(_time(v) for v in (wait.p50, wait.p95, wait.p99)),
        *(_time(v) for v in (duration.p50, duration.p95, duration.p99)),
        "-" if row.retries_per_run is None else f"{row.retries_per_run:.2f}",
        diffs,
    ]


def _time(value: float | None) -> str:
    return "-" if value is None else format_seconds(value)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # The first column reads left to right; figures line up on the right.
    first, *rest = cells
    parts = [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
    return "  ".join(parts).rstrip()
