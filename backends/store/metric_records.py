"""The metrics ledger's SQL: leases, running totals, and adding finished runs to them once.

A run is added to the totals in the same transaction that raises its
``metrics_stage``, so no run is counted twice, whichever gateway folds it and
however often gateways restart; rows are claimed with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so two gateways folding at once never wait on or
double count each other.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from backends.model.status import RUN_TERMINAL_VALUES
from backends.store.models import Lease, MetricTotal, NodeRun, Run
from backends.store.transactions import Transactions, dialect_insert, utcnow

__all__ = ["FoldedNode", "FoldedRun", "MetricRecords", "labels_key"]


#: Run stages (``runs.metrics_stage``).
NOT_COUNTED, SUBMISSION_COUNTED, END_COUNTED = 0, 1, 2


def labels_key(labels: Mapping[str, str]) -> str:
    """The canonical form of a series' labels, as stored.

    >>> labels_key({"workflow_id": "etl", "backend": "rq"})
    '{"backend":"rq","workflow_id":"etl"}'
    """
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FoldedNode:
    node_type: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class FoldedRun:
    """What the ledger reads of a run it counts."""

    workflow_id: str
    backend: str
    status: str
    submitted: bool  # its submission is counted now
    ended: bool  # its end is counted now
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    nodes: tuple[FoldedNode, ...] = ()


#: Turns the runs folded in one round into increments: {(family, labels_key): amount}.
Increments = Callable[[Iterable[FoldedRun]], Mapping[tuple[str, str], float]]


class MetricRecords(Transactions):
    # -- leases ----------------------------------------------------------------------

    def hold_lease(self, *, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
        now = utcnow()
        with self._transaction() as session:
            lease = session.scalar(select(Lease).where(Lease.name == name).with_for_update())
            if lease is None:
                inserted = session.execute(
                    dialect_insert(session, Lease)
                    .values(name=name, holder=holder, expires_at=now + ttl)
                    .on_conflict_do_nothing()
                    .returning(Lease.name)
                ).first()
                return inserted is not None
            if lease.holder != holder and lease.expires_at > now:
                return False
            lease.holder = holder
            lease.expires_at = now + ttl
            return True

    def release_lease(self, *, name: str, holder: str) -> None:
        """Give the lease up at once (a gateway stopping), so another takes it without waiting."""
        with self._transaction() as session:
            session.execute(
                update(Lease)
                .where(Lease.name == name, Lease.holder == holder)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )

    # -- totals ----------------------------------------------------------------------

    def fold_runs(self, increments: Increments, *, limit: int = 1_000) -> int:
        """Add the next runs not yet counted to the totals; returns how many were folded."""
        with self._transaction() as session:
            claim = (
                select(Run)
                .where(
                    Run.shadow_of.is_(None),
                    Run.metrics_stage < END_COUNTED,
                    or_(
                        (Run.metrics_stage == NOT_COUNTED) & Run.submitted_at.is_not(None),
                        Run.status.in_(RUN_TERMINAL_VALUES),
                    ),
                )
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            runs = session.scalars(claim).all()
            if not runs:
                return 0
            ended_ids = [run.job_run_id for run in runs if run.status in RUN_TERMINAL_VALUES]
            nodes: dict[str, list[FoldedNode]] = {}
            if ended_ids:
                for row in session.scalars(
                    select(NodeRun).where(NodeRun.job_run_id.in_(ended_ids))
                ).all():
                    nodes.setdefault(row.job_run_id, []).append(
                        FoldedNode(row.node_type, row.attempts, row.started_at, row.finished_at)
                    )
            folded: list[FoldedRun] = []
            for run in runs:
                ended = run.status in RUN_TERMINAL_VALUES
                submitted = run.metrics_stage == NOT_COUNTED and run.submitted_at is not None
                folded.append(
                    FoldedRun(
                        workflow_id=run.workflow_id,
                        backend=run.backend,
                        status=run.status,
                        submitted=submitted,
                        ended=ended,
                        submitted_at=run.submitted_at,
                        started_at=run.started_at,
                        finished_at=run.finished_at,
                        nodes=tuple(nodes.get(run.job_run_id, ())) if ended else (),
                    )
                )
                run.metrics_stage = END_COUNTED if ended else SUBMISSION_COUNTED
            _add(session, increments(folded))
            return len(runs)

    def add_totals(self, amounts: Mapping[tuple[str, str], float]) -> None:
        """Add to totals directly (counts that are not per run)."""
        with self._transaction() as session:
            _add(session, amounts)

    def totals(self) -> list[tuple[str, dict[str, str], float]]:
        """Every total: (family, labels, value)."""
        with self._transaction() as session:
            rows = session.execute(
                select(MetricTotal.family, MetricTotal.labels, MetricTotal.value)
            ).all()
        return [(family, json.loads(labels), value) for family, labels, value in rows]


def _add(session: Session, amounts: Mapping[tuple[str, str], float]) -> None:
    """``total += amount`` for each series, creating the ones not seen before."""
    merged: dict[tuple[str, str], float] = defaultdict(float)
    for key, amount in amounts.items():
        merged[key] += amount
    if not merged:
        return
    statement = dialect_insert(session, MetricTotal).values(
        [
            {"family": family, "labels": labels, "value": amount}
            for (family, labels), amount in sorted(merged.items())  # a stable lock order
        ]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[MetricTotal.family, MetricTotal.labels],
            set_={"value": MetricTotal.value + statement.excluded.value},
        )
    )
