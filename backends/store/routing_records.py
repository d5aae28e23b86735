"""The routing records: applied rules versions, guard trips, shadow comparisons.

Only the gateway uses these, but they live beside the run tables because the
queries join them (a guard reads finished runs; a comparison reads both runs).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import aliased

from backends.model.status import RUN_TERMINAL_VALUES, RunStatus
from backends.store.comparison_records import TIMED_RUN_COLUMNS
from backends.store.models import (
    GuardTrip,
    RolloutEvent,
    RulesApplied,
    RulesVersion,
    Run,
    ShadowComparison,
    Workflow,
)
from backends.store.transactions import Transactions, insert_ignoring_conflicts, utcnow

__all__ = [
    "AppliedVersion",
    "FinishedRun",
    "GuardTripView",
    "RecentRun",
    "RoutingRecords",
    "ShadowCount",
    "ShadowPair",
]

_RESULTS = [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value]


@dataclass(frozen=True, slots=True)
class ShadowCount:
    """Shadow comparisons of one workflow whose shadow ran on ``backend``."""

    workflow_id: str
    backend: str
    compared: int
    mismatched: int


@dataclass(frozen=True, slots=True)
class RecentRun:
    """A client run as the console lists it."""

    job_run_id: str
    workflow_id: str
    backend: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    route_rule: str | None


@dataclass(frozen=True)
class AppliedVersion:
    version: str
    phase: int
    source: str
    applied_at: datetime


@dataclass(frozen=True)
class GuardTripView:
    rule_id: str
    rules_version: str
    tripped_at: datetime
    reason: str
    figures: dict[str, Any]
    reset_at: datetime | None = None
    reset_by: str | None = None


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """A client run that succeeded or failed, with the moments the judge's figures span."""

    workflow_id: str
    backend: str
    status: RunStatus
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime


@dataclass(frozen=True)
class ShadowPair:
    job_run_id: str
    shadow_run_id: str


class RoutingRecords(Transactions):
    def record_applied(self, *, version: str, content: str, phase: int, source: str) -> bool:
        """Store a version put in force; False when it is already the latest one applied.

        Replicas applying the same file at once may both append: the history
        then shows each replica's application, never a wrong version.
        """
        now = utcnow()
        with self._transaction() as session:
            session.execute(
                insert_ignoring_conflicts(session, RulesVersion).values(
                    content_hash=version, content=content, phase=phase, first_applied_at=now
                )
            )
            latest = session.scalar(
                select(RulesApplied.content_hash).order_by(RulesApplied.id.desc()).limit(1)
            )
            if latest == version:
                return False
            session.add(RulesApplied(content_hash=version, source=source, applied_at=now))
            return True

    def history(self, *, limit: int = 100) -> list[AppliedVersion]:
        with self._transaction() as session:
            rows = session.execute(
                select(RulesApplied, RulesVersion.phase)
                .join(RulesVersion, RulesVersion.content_hash == RulesApplied.content_hash)
                .order_by(RulesApplied.id.desc())
                .limit(limit)
            ).all()
        return [
            AppliedVersion(applied.content_hash, phase, applied.source, applied.applied_at)
            for applied, phase in rows
        ]

    def latest_applied(self) -> tuple[str, str] | None:
        """The version and content last put in force by any gateway."""
        with self._transaction() as session:
            row = session.execute(
                select(RulesVersion.content_hash, RulesVersion.content)
                .join(RulesApplied, RulesApplied.content_hash == RulesVersion.content_hash)
                .order_by(RulesApplied.id.desc())
                .limit(1)
            ).first()
        return None if row is None else (row[0], row[1])

    def rules_content(self, *, version: str) -> RulesVersion | None:
        """A version's exact content, to read it back or restore it."""
        with self._transaction() as session:
            return session.get(RulesVersion, version)

    # -- guards ----------------------------------------------------------------------

    def trip_guard(
        self, *, rule_id: str, rules_version: str, reason: str, figures: dict[str, Any]
    ) -> bool:
        """Record a trip; False when the rule's guard is tripped already (by any gateway)."""
        with self._transaction() as session:
            inserted = session.execute(
                insert_ignoring_conflicts(session, GuardTrip)
                .values(
                    rule_id=rule_id,
                    rules_version=rules_version,
                    tripped_at=utcnow(),
                    reason=reason,
                    figures=figures,
                )
                .returning(GuardTrip.id)
            ).first()
            return inserted is not None

    def tripped_guards(self) -> dict[str, GuardTripView]:
        """Guards in force, by rule id."""
        with self._transaction() as session:
            rows = session.scalars(select(GuardTrip).where(GuardTrip.reset_at.is_(None))).all()
        return {row.rule_id: _trip_view(row) for row in rows}

    def reset_guard(self, *, rule_id: str, by: str) -> bool:
        """A person puts the rule back in force; False when its guard was not tripped."""
        with self._transaction() as session:
            reset = session.execute(
                update(GuardTrip)
                .where(GuardTrip.rule_id == rule_id, GuardTrip.reset_at.is_(None))
                .values(reset_at=utcnow(), reset_by=by)
                .returning(GuardTrip.id)
            ).first()
            return reset is not None

    def guard_history(self, *, limit: int = 100) -> list[GuardTripView]:
        with self._transaction() as session:
            rows = session.scalars(
                select(GuardTrip).order_by(GuardTrip.id.desc()).limit(limit)
            ).all()
        return [_trip_view(row) for row in rows]

    def last_reset(self, *, rule_id: str) -> datetime | None:
        with self._transaction() as session:
            return session.scalar(
                select(func.max(GuardTrip.reset_at)).where(GuardTrip.rule_id == rule_id)
            )

    def finished_runs_of_rule(
        self,
        *,
        rule_id: str,
        since: datetime,
        created_since: datetime | None = None,
        limit: int = 50_000,
    ) -> list[FinishedRun]:
        """Client runs that succeeded or failed since ``since`` (and, when given, were
        accepted since ``created_since``: a rollout step counts only the runs routed at
        that step), of the workflows the rule routed, in the order they finished (the
        latest ``limit`` of them).

        Runs of those workflows count whichever rule routed them, so the old
        backend's recent runs are the baseline the new backend is held to.
        """
        routed = (
            select(Run.workflow_id)
            .where(Run.route_rule == rule_id, Run.created_at >= since, Run.shadow_of.is_(None))
            .distinct()
        )
        conditions = [
            Run.workflow_id.in_(routed),
            Run.shadow_of.is_(None),
            Run.finished_at >= since,
            Run.status.in_(_RESULTS),
        ]
        if created_since is not None:
            conditions.append(Run.created_at >= created_since)
        with self._transaction() as session:
            rows = session.execute(
                select(*TIMED_RUN_COLUMNS)
                .where(*conditions)
                .order_by(Run.finished_at.desc(), Run.job_run_id.desc())
                .limit(limit)
            ).all()
        return [
            FinishedRun(workflow_id, backend, RunStatus(status), submitted, started, finished)
            for workflow_id, backend, status, submitted, started, finished in reversed(rows)
            if finished is not None  # always set on a finished run; this tells mypy
        ]

    # -- shadows ---------------------------------------------------------------------

    def shadows_to_compare(self, *, limit: int = 200) -> list[ShadowPair]:
        """Shadow runs that succeeded or failed, whose client run did too, not compared yet."""
        primary = aliased(Run)
        with self._transaction() as session:
            rows = session.execute(
                select(primary.job_run_id, Run.job_run_id)
                .join(primary, primary.job_run_id == Run.shadow_of)
                .outerjoin(ShadowComparison, ShadowComparison.job_run_id == primary.job_run_id)
                .where(
                    Run.shadow_of.is_not(None),
                    Run.submitted_at.is_not(None),  # a shadow never started has nothing to say
                    # A kill is not a result: a killed run or shadow is not compared.
                    Run.status.in_(_RESULTS),
                    primary.status.in_(_RESULTS),
                    ShadowComparison.job_run_id.is_(None),
                )
                .limit(limit)
            ).all()
        return [ShadowPair(job_run_id, shadow_run_id) for job_run_id, shadow_run_id in rows]

    def record_comparison(
        self,
        *,
        pair: ShadowPair,
        workflow_id: str,
        primary_backend: str,
        shadow_backend: str,
        mismatches: Sequence[dict[str, Any]],
    ) -> bool:
        """Store a comparison once; False when another gateway stored it first."""
        with self._transaction() as session:
            inserted = session.execute(
                insert_ignoring_conflicts(session, ShadowComparison)
                .values(
                    job_run_id=pair.job_run_id,
                    shadow_run_id=pair.shadow_run_id,
                    workflow_id=workflow_id,
                    primary_backend=primary_backend,
                    shadow_backend=shadow_backend,
                    matched=not mismatches,
                    mismatches=list(mismatches),
                    compared_at=utcnow(),
                )
                .returning(ShadowComparison.job_run_id)
            ).first()
            return inserted is not None

    def comparison(self, *, job_run_id: str) -> ShadowComparison | None:
        with self._transaction() as session:
            return session.get(ShadowComparison, job_run_id)

    def mismatched_shadows(self, *, limit: int = 100) -> list[ShadowComparison]:
        """The latest comparisons that found a difference, newest first."""
        with self._transaction() as session:
            return list(
                session.scalars(
                    select(ShadowComparison)
                    .where(ShadowComparison.matched.is_(False))
                    .order_by(ShadowComparison.compared_at.desc())
                    .limit(limit)
                ).all()
            )

    def shadow_counts(
        self, *, since: datetime | None = None, workflows: Collection[str] = ()
    ) -> list[ShadowCount]:
        """Per workflow and shadow backend: comparisons made (since ``since``, when given)
        and how many mismatched; for the metrics, the summary and the comparison report."""
        statement = select(
            ShadowComparison.workflow_id,
            ShadowComparison.shadow_backend,
            func.count(),
            func.count().filter(ShadowComparison.matched.is_(False)),
        ).group_by(ShadowComparison.workflow_id, ShadowComparison.shadow_backend)
        if since is not None:
            statement = statement.where(ShadowComparison.compared_at >= since)
        if workflows:
            statement = statement.where(ShadowComparison.workflow_id.in_(sorted(set(workflows))))
        with self._transaction() as session:
            rows = session.execute(statement).all()
        return [
            ShadowCount(workflow_id, backend, compared, mismatched)
            for workflow_id, backend, compared, mismatched in rows
        ]

    def guard_trip_counts(self) -> dict[str, int]:
        """Trips ever recorded per rule, reset or not, for the metrics."""
        with self._transaction() as session:
            rows = session.execute(
                select(GuardTrip.rule_id, func.count()).group_by(GuardTrip.rule_id)
            ).all()
        return {rule_id: count for rule_id, count in rows}

    def rollout_advance_counts(self) -> dict[str, int]:
        """Rollout advances ever recorded per rule, for the metrics."""
        with self._transaction() as session:
            rows = session.execute(
                select(RolloutEvent.rule_id, func.count())
                .where(RolloutEvent.action == "advanced")
                .group_by(RolloutEvent.rule_id)
            ).all()
        return {rule_id: count for rule_id, count in rows}

    def shadow_summary(self) -> dict[str, dict[str, int]]:
        """Per workflow: shadow comparisons made and how many mismatched."""
        summary: dict[str, dict[str, int]] = {}
        for count in self.shadow_counts():
            totals = summary.setdefault(count.workflow_id, {"compared": 0, "mismatched": 0})
            totals["compared"] += count.compared
            totals["mismatched"] += count.mismatched
        return summary

    # -- what still holds a backend --------------------------------------------------

    def active_runs_on(self, *, backend: str, sample: int = 20) -> tuple[int, list[str]]:
        """How many runs on ``backend`` have not finished, and some of their ids."""
        active = and_(Run.backend == backend, Run.status.not_in(RUN_TERMINAL_VALUES))
        with self._transaction() as session:
            count = session.scalar(select(func.count()).select_from(Run).where(active)) or 0
            ids = session.scalars(
                select(Run.job_run_id).where(active).order_by(Run.created_at).limit(sample)
            ).all()
        return count, list(ids)

    def runs_in_flight(self) -> dict[str, dict[str, int]]:
        """Unfinished client runs per backend and status (shadow runs left out)."""
        with self._transaction() as session:
            rows = session.execute(
                select(Run.backend, Run.status, func.count())
                .where(Run.status.not_in(RUN_TERMINAL_VALUES), Run.shadow_of.is_(None))
                .group_by(Run.backend, Run.status)
            ).all()
        found: dict[str, dict[str, int]] = {}
        for backend, status, count in rows:
            found.setdefault(backend, {})[status] = count
        return found

    def recent_runs(self, *, limit: int = 20) -> list[RecentRun]:
        """The latest client runs, newest first."""
        with self._transaction() as session:
            rows = session.execute(
                select(
                    Run.job_run_id,
                    Run.workflow_id,
                    Run.backend,
                    Run.status,
                    Run.created_at,
                    Run.finished_at,
                    Run.route_rule,
                )
                .where(Run.shadow_of.is_(None))
                .order_by(Run.created_at.desc(), Run.job_run_id)
                .limit(limit)
            ).all()
        return [RecentRun(*row) for row in rows]

    def workflows(self) -> list[Workflow]:
        """Every registered workflow with its current definition."""
        with self._transaction() as session:
            return list(session.scalars(select(Workflow).order_by(Workflow.workflow_id)).all())

    def recent_job_ids(self, *, workflow_id: str, limit: int = 1_000) -> list[str]:
        """Distinct job ids of the workflow's latest client runs."""
        with self._transaction() as session:
            latest = (
                select(Run.job_id, func.max(Run.created_at).label("last"))
                .where(Run.workflow_id == workflow_id, Run.shadow_of.is_(None))
                .group_by(Run.job_id)
                .subquery()
            )
            return list(
                session.scalars(
                    select(latest.c.job_id).order_by(latest.c.last.desc()).limit(limit)
                ).all()
            )


def _trip_view(row: GuardTrip) -> GuardTripView:
    return GuardTripView(
        rule_id=row.rule_id,
        rules_version=row.rules_version,
        tripped_at=row.tripped_at,
        reason=row.reason,
        figures=dict(row.figures),
        reset_at=row.reset_at,
        reset_by=row.reset_by,
    )
