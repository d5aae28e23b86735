"""Reading the transition journal in order: what live status updates are made of.

Every run and node transition is a row of ``transitions`` (see
``Store.record_node``), numbered in the order it was committed per run. A
reader keeps the last id it saw and asks for what follows: nothing is missed
and nothing comes twice, whichever gateway or worker wrote it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from backends.store.models import RUN_LEVEL, Run, Transition
from backends.store.transactions import Transactions

__all__ = ["Journal", "JournalEntry"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    job_run_id: str
    node_id: str | None  # None: the run's own transition
    attempt: int
    status: str
    at: datetime
    error: str | None


class Journal(Transactions):
    def since(self, *, job_run_id: str, after_id: int, limit: int = 1_000) -> list[JournalEntry]:
        """The run's transitions after ``after_id``, oldest first."""
        with self._transaction() as session:
            rows = session.execute(
                select(Transition)
                .where(Transition.job_run_id == job_run_id, Transition.id > after_id)
                .order_by(Transition.id)
                .limit(limit)
            ).scalars()
            return [
                JournalEntry(
                    id=row.id,
                    job_run_id=row.job_run_id,
                    node_id=None if row.node_id == RUN_LEVEL else row.node_id,
                    attempt=row.attempt,
                    status=row.status,
                    at=row.at,
                    error=row.error,
                )
                for row in rows
            ]

    def last_id(self, *, job_run_id: str) -> int:
        """The id of the run's latest transition (0 when it has none)."""
        with self._transaction() as session:
            found = session.scalar(
                select(func.max(Transition.id)).where(Transition.job_run_id == job_run_id)
            )
            return int(found or 0)

    def backends(self, *, job_run_ids: Collection[str]) -> dict[str, str]:
        """The backend each run is pinned to."""
        if not job_run_ids:
            return {}
        with self._transaction() as session:
            rows = session.execute(
                select(Run.job_run_id, Run.backend).where(Run.job_run_id.in_(job_run_ids))
            )
            return {job_run_id: backend for job_run_id, backend in rows}
