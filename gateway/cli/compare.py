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
    comparison_report,
    format_seconds,
    parse_since,
)
from gateway.reports.judge import ALL_FIGURES, Answer

__all__ = ["compare", "render_table"]

_DEFAULTS = Thresholds()

_LEGEND = (
    "runs = succeeded + failed (cancelled runs are not judged); wait = accepted to first node "
    "running (judged runs that started); exec = first node running to finished and total = "
    "accepted to finished (succeeded runs); percentiles are nearest-rank; retries/run = extra "
    "node attempts per run; shadow diffs = mismatched/compared shadow comparisons on that "
    "backend. `figway compare --help` and docs/decisions.md have the full definitions."
)

_ANSWER_TEXT = {
    Answer.NOT_WORSE: "not worse",
    Answer.WORSE: "WORSE",
    Answer.INCONCLUSIVE: "inconclusive",
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
    type=click.FloatRange(0, 100, min_open=True, max_open=True),
    default=_DEFAULTS.failure_margin_points,
    show_default=True,
    help="The failure-rate increase that matters, in percentage points.",
)
@click.option(
    "--max-ratio",
    type=click.FloatRange(1, 100, min_open=True),
    default=_DEFAULTS.max_ratio,
    show_default=True,
    help="The slowdown that matters for a time figure (1.2: more than 1.2 times slower).",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 0.999),
    default=_DEFAULTS.confidence,
    show_default=True,
    help="Each answer is wrong at most 1 - confidence of the time, however often asked.",
)
@click.option(
    "--watch",
    "watch",
    multiple=True,
    type=click.Choice([f.value for f in ALL_FIGURES]),
    help="A figure that decides the answer (repeat; default: failure_rate and "
    "execution_time). Every figure is shown.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compare(
    since: str,
    workflows: tuple[str, ...],
    min_runs: int,
    failure_margin: float,
    max_ratio: float,
    confidence: float,
    watch: tuple[str, ...],
    as_json: bool,
) -> None:
    """RQ against Prefect, per workflow: runs, failures, timings, retries, shadows, and the
    judge's answer.

    Reads figway's own records (no Prometheus needed); the gateway serves the
    same report at GET /routing/compare.

    \b
    Definitions (the judge's, docs/decisions.md):
      - Only client runs count (never shadow runs), when they finished in the
        window (--since up to now).
      - runs: judged runs, succeeded + failed. Cancelled runs are counted
        apart and judged in nothing.
      - failure rate: failed / (succeeded + failed).
      - queue wait: accepted (the backend took the run) to its first node
        running, for judged runs that started (a wait below 0 counts as 0).
      - execution time: first node running to finished, succeeded runs.
      - total time: accepted to finished, succeeded runs.
      - p50/p95/p99 are nearest-rank.
      - retries per run: sum over a run's nodes of max(attempts - 1, 0) / runs.
      - shadow mismatches: mismatched / compared shadow comparisons made in the
        window, on the shadow's backend (the backend being tried out).

    \b
    The judge, Prefect against RQ on the same workflow, on the watched figures,
    with anytime-valid sequential tests (valid however often it is asked):
      - worse: beyond a margin (--failure-margin points, or --max-ratio) at
        the stated --confidence;
      - not worse: a difference beyond the margins is ruled out at that
        confidence (the evidence to move on);
      - inconclusive: not yet (always below --min-runs a side), with the runs
        a side still needed and, at the window's rate, how long.
    """
    settings = settings_or_exit()
    now = utcnow()
    try:
        start = parse_since(since, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from exc
    thresholds = Thresholds.model_validate(
        {
            "min_runs": min_runs,
            "failure_margin_points": failure_margin,
            "max_ratio": max_ratio,
            "confidence": confidence,
            **({"watch": list(watch)} if watch else {}),
        }
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
    """The report as a person reads it: one block per workflow, the judge's answer under it."""
    t = report.thresholds
    lines = [
        f"{CANDIDATE} against {BASELINE}: client runs finished from "
        f"{report.since:%Y-%m-%d %H:%M:%S} to {report.until:%Y-%m-%d %H:%M:%S} UTC",
        f"judge: watching {', '.join(t.watch)}; margins {t.failure_margin_points:g} points "
        f"and x{t.max_ratio:g}; {t.confidence:.0%} confidence; at least {t.min_runs} judged "
        "run(s) a side",
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
        "exec p50",
        "exec p95",
        "total p50",
        "total p95",
        "retries/run",
        "shadow diffs",
    ]
    rows: list[list[str] | str] = []
    for workflow in report.workflows:
        if rows:
            rows.append("")
        rows.append(workflow.workflow_id)
        rows.extend(_cells(backend) for backend in workflow.backends)
        judged = workflow.judgement
        rows.append(f"  judge: {_ANSWER_TEXT[judged.answer]} - {judged.sentence}")
        for figure in judged.figures.values():
            mark = "*" if figure["watched"] else " "
            rows.append(f"   {mark} {figure['answer']:<12} {figure['text']}")
        if judged.shadow:
            rows.append(f"  shadows: {judged.shadow} (not judged)")
    widths = [len(h) for h in header]
    for row in rows:
        if isinstance(row, list):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines.append(_line(header, widths))
    for row in rows:
        lines.append(row if isinstance(row, str) else _line(row, widths))
    lines.append("")
    lines += textwrap.wrap(_LEGEND + " * marks a watched figure.", width=100)
    return "\n".join(lines) + "\n"


def _cells(row: BackendReport) -> list[str]:
    shadow = row.shadow
    diffs = "-"
    if shadow.compared and shadow.mismatch_rate is not None:
        diffs = f"{shadow.mismatched}/{shadow.compared} ({shadow.mismatch_rate:.1%})"
    wait, execution, total = (
        row.queue_wait_seconds,
        row.execution_time_seconds,
        row.total_time_seconds,
    )
    return [
        f"  {row.backend}",
        str(row.runs),
        str(row.failed),
        "-" if row.failure_rate is None else f"{row.failure_rate:.1%}",
        str(row.cancelled),
        *(_time(v) for v in (wait.p50, wait.p95, execution.p50, execution.p95)),
        *(_time(v) for v in (total.p50, total.p95)),
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
