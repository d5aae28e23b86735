"""The console's panel: the migration at a glance, rendered on the gateway as HTML.

The page at ``/`` is a static shell; it fetches this panel with the key the user
pasted, as an API client does, so the panel follows the API's access rules section by
section: the migration sections (rules, rollouts, comparisons, shadows, changes) need
what ``/routing/…`` needs (the ``admin`` scope), the recent runs what
``/workflow_runs/…`` needs (``runs``), and the action buttons are drawn only for a key
that may take them (and the endpoints they call check again). With access control
off, as on the embedded default, everything is shown, as the API answers everything.

Every value is escaped here: workflow ids, rule ids, reasons and node names come from
users.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from backends.model.backend_names import LEGACY_BACKEND, SUCCESSOR_BACKEND
from backends.store.api_keys import SCOPES
from backends.store.comparison_records import Reports
from backends.store.routing_records import RecentRun
from gateway.reports.comparison import ComparisonReport, Thresholds, comparison_report
from gateway.reports.distributions import BackendSample, samples_by_workflow
from gateway.reports.judge import Figure
from gateway.reports.overview import CHANGES_SHOWN, StatusView, build_status
from gateway.services import Services
from gateway.web.console.charts import ecdf_chart, failure_chart
from gateway.web.routes.routing import (
    AppliedOut,
    GuardTripOut,
    RolloutEventOut,
    guard_statuses,
    rules_out,
)

__all__ = ["Migration", "Panel", "gather_panel", "render_panel"]

#: The backends every workflow's comparison shows, legacy first.
_SIDE_BY_SIDE = (LEGACY_BACKEND, SUCCESSOR_BACKEND)
_RECENT_RUNS = 25
_MISMATCHES_SHOWN = 10


@dataclass(frozen=True)
class Migration:
    """What ``/routing/…`` would show this key: read with the admin scope only."""

    view: StatusView
    rollouts: list[dict[str, Any]]
    comparison: ComparisonReport
    samples: dict[str, dict[str, BackendSample]]
    shadows: dict[str, dict[str, int]]
    mismatches: list[dict[str, Any]]


@dataclass(frozen=True)
class Panel:
    """What the panel shows, read once; a part is None when the key may not read it."""

    scopes: frozenset[str]
    migration: Migration | None
    runs: list[RecentRun] | None


def gather_panel(
    services: Services, *, scopes: Collection[str], since: datetime, now: datetime
) -> Panel:
    """Read what ``scopes`` may see (every scope with access control off)."""
    migration = _migration(services, since=since, now=now) if "admin" in scopes else None
    runs = services.records.recent_runs(limit=_RECENT_RUNS) if "runs" in scopes else None
    return Panel(scopes=frozenset(scopes), migration=migration, runs=runs)


def _migration(services: Services, *, since: datetime, now: datetime) -> Migration:
    rules = rules_out(services).model_dump(mode="json")
    reports = Reports(services.engine)
    comparison = comparison_report(
        reports, services.records, since=since, now=now, thresholds=Thresholds()
    )
    records = services.records
    view = build_status(
        gateway="",
        rules=rules,
        guards=[g.model_dump(mode="json") for g in guard_statuses(services)],
        comparison=comparison.model_dump(mode="json"),
        in_flight=records.runs_in_flight(),
        versions=[
            AppliedOut(**a.__dict__).model_dump(mode="json")
            for a in records.history(limit=CHANGES_SHOWN)
        ],
        rollout_events=[
            RolloutEventOut.of(e).model_dump(mode="json")
            for e in services.rollouts.records.events(limit=CHANGES_SHOWN)
        ],
        trips=[
            GuardTripOut.of(t).model_dump(mode="json")
            for t in records.guard_history(limit=CHANGES_SHOWN)
        ],
    )
    mismatches = [
        {
            "job_run_id": row.job_run_id,
            "shadow_run_id": row.shadow_run_id,
            "workflow_id": row.workflow_id,
            "shadow_backend": row.shadow_backend,
            "mismatches": row.mismatches,
        }
        for row in records.mismatched_shadows(limit=_MISMATCHES_SHOWN)
    ]
    return Migration(
        view=view,
        rollouts=rules["rollouts"],
        comparison=comparison,
        samples=samples_by_workflow(reports.finished_runs(since=since), backends=_SIDE_BY_SIDE),
        shadows=records.shadow_summary(),
        mismatches=mismatches,
    )


# -- rendering ------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value))


def _button(label: str, path: str, *, confirm: str) -> str:
    return (
        f'<button type="button" class="action" data-path="{_e(path)}" '
        f'data-confirm="{_e(confirm)}">{_e(label)}</button>'
    )


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "") -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f'<time datetime="{_e(moment.isoformat())}">{moment:%Y-%m-%d %H:%M:%S}</time>'


def _withheld(section: str, scope: str) -> str:
    return (
        f'<section class="withheld" data-section="{_e(section)}"><p>{_e(section)}: '
        f"this key lacks the {_e(scope)} scope.</p></section>"
    )


def _share(share: Mapping[str, float]) -> str:
    bars = "".join(
        f'<span class="share {_e(backend)}" style="width:{percent:g}%" '
        f'data-backend="{_e(backend)}" data-percent="{percent:g}">{_e(backend)} {percent:g}%'
        "</span>"
        for backend, percent in share.items()
    )
    return f'<div class="shares">{bars}</div>'


def _overview(view: StatusView) -> str:
    backends = ", ".join(f"{_e(n)} {_e(s)}" for n, s in view.backends.items())
    refused = (
        f'<p class="refused">Refused rules file: {_e(view.refused)}</p>' if view.refused else ""
    )
    return (
        f'<section id="overview"><p class="facts">Phase <b data-phase="{view.phase}">'
        f"{view.phase}</b> · rules version <code>{_e(view.version)}</code> · default "
        f"<b>{_e(view.default)}</b> · backends {backends}</p>{refused}</section>"
    )


def _rules(view: StatusView, admin: bool) -> str:
    rows = []
    for rule in view.rules:
        actions = ""
        if admin and rule["guard"].startswith("tripped"):
            actions = _button(
                "Reset guard",
                f"/routing/guards/{quote(rule['id'], safe='')}/reset",
                confirm=f"Put rule {rule['id']} back in force?",
            )
        shadow = f" + shadow on {_e(rule['shadow'])}" if rule["shadow"] else ""
        rows.append(
            [
                f"<code>{_e(rule['id'])}</code>",
                _e(rule["match"]),
                _share(rule["share"]) + shadow,
                _e(rule["step"] or "-"),
                _e(rule["guard"]),
                _e(rule["promotion"] or "-"),
                actions,
            ]
        )
    reload = (
        _button("Reload rules", "/routing/reload", confirm="Read the rules file now?")
        if admin
        else ""
    )
    return (
        f'<section id="rules"><h2>Rules in force {reload}</h2>'
        + _table(("rule", "matches", "share", "step", "guard", "promotion", ""), rows)
        + "</section>"
    )


def _rollouts(rollouts: list[dict[str, Any]], admin: bool) -> str:
    if not rollouts:
        return '<section id="rollouts"><h2>Rollouts</h2><p>No rule has steps.</p></section>'
    parts = ['<section id="rollouts"><h2>Rollouts</h2>']
    for rollout in rollouts:
        rule_id = rollout["rule_id"]
        path = f"/routing/rollouts/{quote(rule_id, safe='')}"
        actions = ""
        if admin and rollout["state"] == "running":
            actions = _button("Pause", f"{path}/pause", confirm=f"Hold rollout {rule_id}?")
        elif admin and rollout["state"] in ("paused", "pinned"):
            actions = _button("Resume", f"{path}/resume", confirm=f"Resume rollout {rule_id}?")
        steps = " → ".join(
            f'<span class="{"current" if step == rollout["percent"] else ""}">{step:g}%</span>'
            for step in rollout["steps"]
        )
        history = _table(
            ("at", "move", "by", "reason"),
            (
                [
                    _when(event["at"]),
                    _e(event["action"])
                    + (
                        f" {event['from_percent'] or 0:g}% → {event['to_percent']:g}%"
                        if event["to_percent"] is not None
                        else ""
                    ),
                    _e(event["by"]),
                    _e(event["reason"]),
                ]
                for event in rollout["recent"]
            ),
            cls="history",
        )
        parts.append(
            f'<article class="rollout" data-rule="{_e(rule_id)}" data-state="{_e(rollout["state"])}"'
            f' data-percent="{rollout["percent"]:g}"><h3><code>{_e(rule_id)}</code> '
            f'<span class="state">{_e(rollout["state"])}</span> {actions}</h3>'
            f"<p>{_e(rollout['text'])} · steps {steps}"
            + (' · <b class="bad">rolled back</b>' if rollout["rolled_back"] else "")
            + f"</p>{history}</article>"
        )
    parts.append("</section>")
    return "".join(parts)


_FIGURE_ROWS = (Figure.FAILURE_RATE, Figure.QUEUE_WAIT, Figure.EXECUTION_TIME, Figure.TOTAL_TIME)


def _workflows(comparison: ComparisonReport, samples: dict[str, dict[str, BackendSample]]) -> str:
    parts = [
        '<section id="workflows"><h2>RQ and Prefect, per workflow</h2>'
        f'<p class="note">Runs finished since {_when(comparison.since)}; the judge holds '
        f"prefect to rq with {comparison.thresholds.confidence:.0%} confidence "
        "(docs/decisions.md).</p>"
    ]
    if not comparison.workflows:
        parts.append("<p>No run has finished in the window yet.</p>")
    for workflow in comparison.workflows:
        judgement = workflow.judgement
        per_backend = samples.get(workflow.workflow_id, {})
        sides = [per_backend.get(b, BackendSample(b)) for b in _SIDE_BY_SIDE]
        figures = _table(
            ("figure", "answer", "prefect", "rq", "estimate and bounds"),
            (
                [
                    _e(figure.label) + (" (watched)" if figure in judgement.watched else ""),
                    f'<span class="answer {_e(data["answer"])}">{_e(data["answer"])}</span>',
                    _e(_value(data["candidate_value"], figure)),
                    _e(_value(data["baseline_value"], figure)),
                    _e(data["text"]),
                ]
                for figure in _FIGURE_ROWS
                if (data := judgement.figures.get(figure.value)) is not None
            ),
            cls="figures",
        )
        charts = (
            failure_chart({s.backend: (s.failed, s.runs) for s in sides})
            + ecdf_chart("queue wait", {s.backend: s.values[Figure.QUEUE_WAIT] for s in sides})
            + ecdf_chart(
                "execution time", {s.backend: s.values[Figure.EXECUTION_TIME] for s in sides}
            )
        )
        parts.append(
            f'<article class="workflow" data-workflow="{_e(workflow.workflow_id)}" '
            f'data-answer="{_e(judgement.answer.value)}"><h3><code>{_e(workflow.workflow_id)}'
            f'</code> <span class="answer {_e(judgement.answer.value)}">'
            f"{_e(judgement.answer.value)}</span></h3>"
            f'<p class="sentence">{_e(judgement.sentence)}</p>'
            + (f'<p class="shadow-note">{_e(judgement.shadow)}</p>' if judgement.shadow else "")
            + f'<div class="charts">{charts}</div>{figures}</article>'
        )
    parts.append("</section>")
    return "".join(parts)


def _value(value: float | None, figure: Figure) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}%" if figure is Figure.FAILURE_RATE else f"{value:.3f} s"


def _shadows(summary: dict[str, dict[str, int]], mismatches: list[dict[str, Any]]) -> str:
    rows = (
        [f"<code>{_e(w)}</code>", str(c["compared"]), str(c["mismatched"])]
        for w, c in sorted(summary.items())
    )
    parts = [
        '<section id="shadows"><h2>Shadow comparisons</h2>',
        _table(("workflow", "compared", "mismatched"), rows) if summary else "<p>None yet.</p>",
    ]
    if mismatches:
        parts.append("<h3>Latest mismatches, node by node</h3>")
    for found in mismatches:
        parts.append(
            f'<article class="mismatch" data-run="{_e(found["job_run_id"])}"><p>'
            f'<a href="/console/runs/{quote(found["job_run_id"], safe="")}">'
            f"{_e(found['job_run_id'])}</a> of <code>{_e(found['workflow_id'])}</code> against "
            f"its shadow on {_e(found['shadow_backend'])}</p>"
            + _table(
                ("node", "what", "run", "shadow"),
                (
                    [
                        _e(m.get("node") or "(run)"),
                        _e(m.get("field")),
                        f"<code>{_e(m.get('primary'))}</code>",
                        f"<code>{_e(m.get('shadow'))}</code>",
                    ]
                    for m in found["mismatches"]
                ),
            )
            + "</article>"
        )
    parts.append("</section>")
    return "".join(parts)


def _in_flight(view: StatusView) -> str:
    rows = [
        [
            _e(backend),
            *(str(counts.get(s, 0)) for s in ("pending", "queued", "running", "cancelling")),
        ]
        for backend, counts in view.in_flight.items()
    ]
    return (
        '<section id="in-flight"><h2>Runs in flight</h2>'
        + (
            _table(("backend", "pending", "queued", "running", "cancelling"), rows)
            if rows
            else "<p>None.</p>"
        )
        + "</section>"
    )


def _changes(view: StatusView) -> str:
    rows = ([_when(c["at"]), _e(c["what"]), _e(c["by"])] for c in view.changes)
    return (
        '<section id="changes"><h2>Last changes</h2>'
        + _table(("at", "what", "by"), rows)
        + "</section>"
    )


def _runs(runs: list[RecentRun]) -> str:
    rows = (
        [
            f'<a href="/console/runs/{quote(run.job_run_id, safe="")}">{_e(run.job_run_id)}</a>',
            f"<code>{_e(run.workflow_id)}</code>",
            _e(run.backend),
            f'<span class="status {_e(run.status)}">{_e(run.status)}</span>',
            _when(run.created_at),
            _when(run.finished_at),
            _e(run.route_rule or "(default)"),
        ]
        for run in runs
    )
    return (
        '<section id="runs"><h2>Recent runs</h2>'
        + _table(("run", "workflow", "backend", "status", "accepted", "finished", "rule"), rows)
        + "</section>"
    )


def render_panel(panel: Panel) -> str:
    """The panel's HTML fragment (the shell inserts it as it is)."""
    admin = "admin" in panel.scopes
    who = "all scopes (access control off)" if panel.scopes == frozenset(SCOPES) else ""
    if not who:
        who = "key scopes: " + ", ".join(sorted(panel.scopes))
    parts = [f'<p class="who" data-admin="{str(admin).lower()}">{_e(who)}</p>']
    found = panel.migration
    if found is None:
        parts.append(_withheld("rules, rollouts, comparisons and shadows", "admin"))
    else:
        parts += [
            _overview(found.view),
            _rules(found.view, admin),
            _rollouts(found.rollouts, admin),
            _workflows(found.comparison, found.samples),
            _shadows(found.shadows, found.mismatches),
            _in_flight(found.view),
            _changes(found.view),
        ]
    parts.append(_withheld("recent runs", "runs") if panel.runs is None else _runs(panel.runs))
    return "".join(parts)
