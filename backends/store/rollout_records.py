"""Rollouts in steps: where each stands (``rollouts``) and every move it made (``rollout_events``).

Every gateway reads and moves the same rows, so a rollout is one thing however many
gateways serve. A move names the revision it read and changes the row only if it is
still that revision, in the same transaction as its event: of two gateways advancing
one rollout at once, exactly one advances it and records why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from backends.store.models import Rollout, RolloutEvent
from backends.store.transactions import Transactions, insert_ignoring_conflicts, utcnow

__all__ = ["RolloutEventView", "RolloutMove", "RolloutRecords", "RolloutRow"]


@dataclass(frozen=True)
class RolloutRow:
    rule_id: str
    steps: tuple[float, ...]
    percent: float
    state: str
    revision: int
    step_started_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RolloutEventView:
    id: int
    rule_id: str
    at: datetime
    action: str
    from_percent: float | None
    to_percent: float | None
    by: str
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class RolloutMove:
    """A change to one rollout, and the event that records it."""

    action: str  # advanced, rolled_back, paused, resumed, pinned, reconciled
    by: str
    reason: str
    percent: float
    steps: Sequence[float]
    state: str
    restart_evidence: bool = False
    evidence: dict[str, Any] | None = None


class RolloutRecords(Transactions):
    def rollouts(self) -> dict[str, RolloutRow]:
        with self._transaction() as session:
            rows = session.scalars(select(Rollout)).all()
        return {row.rule_id: _row(row) for row in rows}

    def rollout(self, *, rule_id: str) -> RolloutRow | None:
        with self._transaction() as session:
            row = session.get(Rollout, rule_id)
            return None if row is None else _row(row)

    def start(
        self, *, rule_id: str, steps: Sequence[float], percent: float, state: str, by: str
    ) -> bool:
        """Record a new rollout at its first position; False when one exists already."""
        now = utcnow()
        with self._transaction() as session:
            inserted = session.execute(
                insert_ignoring_conflicts(session, Rollout)
                .values(
                    rule_id=rule_id,
                    steps=[float(s) for s in steps],
                    percent=percent,
                    state=state,
                    revision=1,
                    step_started_at=now,
                    updated_at=now,
                )
                .returning(Rollout.rule_id)
            ).first()
            if inserted is None:
                return False
            reason = f"the rules file gives rule {rule_id!r} steps; it starts at {percent:g}%"
            session.add(_event(rule_id, "started", by, reason, None, percent))
            return True

    def move(self, *, rule_id: str, revision: int, move: RolloutMove) -> bool:
        """Apply ``move`` if the rollout is still at ``revision``; False when another moved it."""
        now = utcnow()
        with self._transaction() as session:
            before = session.get(Rollout, rule_id)
            if before is None or before.revision != revision:
                return False
            values: dict[str, Any] = {
                "steps": [float(s) for s in move.steps],
                "percent": move.percent,
                "state": move.state,
                "revision": revision + 1,
                "updated_at": now,
            }
            if move.restart_evidence:
                values["step_started_at"] = now
            from_percent = before.percent
            changed = session.execute(
                update(Rollout)
                .where(Rollout.rule_id == rule_id, Rollout.revision == revision)
                .values(**values)
                .returning(Rollout.rule_id)
            ).first()
            if changed is None:
                return False
            session.add(
                _event(
                    rule_id,
                    move.action,
                    move.by,
                    move.reason,
                    from_percent,
                    move.percent,
                    move.evidence,
                )
            )
            return True

    def record_event(
        self,
        *,
        rule_id: str,
        action: str,
        by: str,
        reason: str,
        percent: float | None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """An event that moves nothing (a rollback is a guard trip; the rollout stays put)."""
        with self._transaction() as session:
            session.add(_event(rule_id, action, by, reason, percent, percent, evidence))

    def events(self, *, rule_id: str | None = None, limit: int = 100) -> list[RolloutEventView]:
        """Moves, newest first (of one rule, when given)."""
        statement = select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)
        if rule_id is not None:
            statement = statement.where(RolloutEvent.rule_id == rule_id)
        with self._transaction() as session:
            rows = session.scalars(statement).all()
        return [
            RolloutEventView(
                id=row.id,
                rule_id=row.rule_id,
                at=row.at,
                action=row.action,
                from_percent=row.from_percent,
                to_percent=row.to_percent,
                by=row.by,
                reason=row.reason,
                evidence=dict(row.evidence),
            )
            for row in rows
        ]


def _event(
    rule_id: str,
    action: str,
    by: str,
    reason: str,
    from_percent: float | None,
    to_percent: float | None,
    evidence: dict[str, Any] | None = None,
) -> RolloutEvent:
    return RolloutEvent(
        rule_id=rule_id,
        at=utcnow(),
        action=action,
        from_percent=from_percent,
        to_percent=to_percent,
        by=by[:128],
        reason=reason,
        evidence=evidence or {},
    )


def _row(row: Rollout) -> RolloutRow:
    return RolloutRow(
        rule_id=row.rule_id,
        steps=tuple(float(s) for s in row.steps),
        percent=float(row.percent),
        state=row.state,
        revision=row.revision,
        step_started_at=row.step_started_at,
        updated_at=row.updated_at,
    )
