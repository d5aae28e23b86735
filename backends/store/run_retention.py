"""Which finished runs have outlived their retention, and deleting them.

A run is deleted with everything recorded of it (its nodes, journal, log lines
and shadow comparison go with it: their foreign keys cascade) once it has
ended more than the retention ago, its artifacts have been removed, and, for a
client's run, the metrics ledger has counted its end. So deleting a run never
leaves files behind or takes anything out of the totals Prometheus reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select

from backends.model.status import RUN_TERMINAL_VALUES
from backends.store.metric_records import END_COUNTED
from backends.store.models import Run
from backends.store.transactions import Transactions

__all__ = ["RunRetentionRecords"]


class RunRetentionRecords(Transactions):
    def delete_finished(self, *, finished_before: datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` runs that may go (see the module docstring), oldest first."""
        with self._transaction() as session:
            expired = (
                select(Run.job_run_id)
                .where(
                    Run.status.in_(RUN_TERMINAL_VALUES),
                    Run.finished_at < finished_before,
                    Run.artifacts_purged_at.is_not(None),
                    or_(Run.metrics_stage == END_COUNTED, Run.shadow_of.is_not(None)),
                )
                .order_by(Run.finished_at)
                .limit(limit)
            )
            job_run_ids = list(session.scalars(expired))
            if not job_run_ids:
                return 0
            result: Any = session.execute(delete(Run).where(Run.job_run_id.in_(job_run_ids)))
            return int(result.rowcount or 0)
