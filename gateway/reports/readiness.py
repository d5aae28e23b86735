"""Phase 3 readiness: can RQ be switched off?

Only when nothing can send a run to RQ any more and RQ holds nothing: no rule
or definition routes to it, no run on it is unfinished, and its queues and
its deferred, scheduled, started and failed registries are empty; and when the
judge (``gateway/reports/judge.py``) has not found Prefect worse than RQ on any
workflow that ran on both in the last week, since switching RQ off takes away
the way back. Anything else is listed, so the engineer knows what to drain or
change first. Each such workflow's judgement is in the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from backends.contract import LEGACY_BACKEND, Executor
from backends.model.errors import BackendUnavailableError
from backends.store import utcnow
from backends.store.comparison_records import Reports
from backends.store.models import Workflow
from backends.store.routing_records import RoutingRecords
from gateway.reports.comparison import Thresholds, build_report
from gateway.reports.judge import Answer
from gateway.routing.loading import backend_references
from gateway.routing.router import RoutingTable

__all__ = ["EVIDENCE_WINDOW", "Readiness", "rq_readiness"]

#: The runs the judge weighs for readiness: those that finished this recently.
EVIDENCE_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    #: What still holds RQ, one sentence each; empty when ready.
    holds: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)


def rq_readiness(
    *,
    table: RoutingTable,
    workflows: Sequence[Workflow],
    records: RoutingRecords,
    legacy: Executor,
) -> Readiness:
    holds: list[str] = []
    routes = [
        _describe(table, path)
        for path, backend in backend_references(table.rules)
        if backend == LEGACY_BACKEND
    ]
    if routes:
        holds.append(f"routing rules version {table.version} still name rq at: {', '.join(routes)}")
    pinned = sorted(
        w.workflow_id for w in workflows if w.definition.get("backend") == LEGACY_BACKEND
    )
    if pinned:
        holds.append(f"workflow definitions pinned to rq (backend: rq): {', '.join(pinned)}")
    active, sample = records.active_runs_on(backend=LEGACY_BACKEND)
    if active:
        holds.append(
            f"{active} run(s) on rq have not finished, e.g. {', '.join(sample[:5])}; "
            "wait for them or kill them"
        )
    jobs: dict[str, int] | None
    try:
        jobs = legacy.holdings()
    except BackendUnavailableError as exc:
        jobs = None
        holds.append(f"cannot count RQ's jobs: {exc.message}")
    if jobs:
        busy = {name: count for name, count in jobs.items() if count}
        if busy:
            listing = ", ".join(f"{name} {count}" for name, count in sorted(busy.items()))
            holds.append(f"RQ still holds jobs: {listing}")
    judgements = _judgements(records)
    worse = sorted(w for w, j in judgements.items() if j["answer"] == Answer.WORSE.value)
    for workflow_id in worse:
        holds.append(
            f"workflow {workflow_id}: {judgements[workflow_id]['sentence']} "
            "Switching RQ off would take away the way back"
        )
    return Readiness(
        ready=not holds,
        holds=tuple(holds),
        figures={
            "rules_version": table.version,
            "phase": table.rules.phase,
            "routes_to_rq": routes,
            "pinned_to_rq": pinned,
            "active_rq_runs": active,
            "rq_jobs": jobs,
            "judgements": judgements,
        },
    )


def _judgements(records: RoutingRecords) -> dict[str, dict[str, Any]]:
    """The judge on every workflow that finished runs on both backends in the window."""
    now = utcnow()
    since = now - EVIDENCE_WINDOW
    report = build_report(
        Reports(records.engine).finished_runs(since=since),
        [],
        since=since,
        until=now,
        thresholds=Thresholds(),
    )
    return {
        workflow.workflow_id: {
            "answer": workflow.judgement.answer.value,
            "sentence": workflow.judgement.sentence,
            "more_runs": workflow.judgement.more_runs,
        }
        for workflow in report.workflows
        if all(row.runs for row in workflow.backends[:2])
    }


def _describe(table: RoutingTable, path: tuple[str | int, ...]) -> str:
    """``("rules", 0, "fallback")`` -> ``rule 'pilot' fallback``."""
    if path[0] == "rules" and isinstance(path[1], int):
        rest = ".".join(str(part) for part in path[2:])
        return f"rule {table.rules.rules[path[1]].id!r} {rest}"
    return ".".join(str(part) for part in path)
