"""Which finished runs still have table outputs in the artifact store, and marking them purged."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from backends.model.status import RUN_TERMINAL_VALUES
from backends.store.models import Run
from backends.store.transactions import Transactions

__all__ = ["ArtifactRecords"]


class ArtifactRecords(Transactions):
    def runs_to_purge(self, *, finished_before: datetime, limit: int = 500) -> list[str]:
        """Finished runs (shadows included) older than the retention, oldest first."""
        with self._transaction() as session:
            return list(
                session.scalars(
                    select(Run.job_run_id)
                    .where(
                        Run.artifacts_purged_at.is_(None),
                        Run.finished_at < finished_before,
                        Run.status.in_(RUN_TERMINAL_VALUES),
                    )
                    .order_by(Run.finished_at)
                    .limit(limit)
                )
            )

    def mark_purged(self, *, job_run_ids: Collection[str], at: datetime) -> int:
        if not job_run_ids:
            return 0
        with self._transaction() as session:
            result: Any = session.execute(
                update(Run)
                .where(Run.job_run_id.in_(list(job_run_ids)), Run.artifacts_purged_at.is_(None))
                .values(artifacts_purged_at=at)
            )
            return int(result.rowcount or 0)
