"""Retention of the run records: runs, their nodes, journal and log lines.

Off unless ``FIGWAY_RUN_RETENTION_DAYS`` is set: the records are the migration's
evidence (comparisons, guards, readiness read them), so deleting them is the
operator's choice. With it set, each round deletes, in batches, the runs that
ended more than that long ago and that nothing still needs
(:mod:`backends.store.run_retention`). Deleting is idempotent, so two
gateways doing it at once do no harm.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from backends.store import utcnow
from backends.store.run_retention import RunRetentionRecords

__all__ = ["RunRetention"]

log = logging.getLogger(__name__)


class RunRetention:
    def __init__(self, records: RunRetentionRecords, *, retention: timedelta) -> None:
        self.records = records
        self.retention = retention

    def delete_expired(self, *, now: datetime | None = None, batch: int = 500) -> int:
        """Delete every run past the retention; returns how many went."""
        cutoff = (now or utcnow()) - self.retention
        deleted = 0
        while True:
            went = self.records.delete_finished(finished_before=cutoff, limit=batch)
            deleted += went
            if went < batch:
                break
        if deleted:
            log.info("deleted %d run(s) that ended before %s", deleted, cutoff.isoformat())
        return deleted
