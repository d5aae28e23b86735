"""Retention: removing the table outputs of runs that finished long enough ago.

Node outputs are needed while a run runs (downstream nodes read them) and
for a while after (people inspect them); then they only take space. Each
round removes the files of up to ``batch`` runs that finished more than the
retention ago, and marks them in the database so they are not visited again.
Removing is idempotent, so two gateways doing it at once do no harm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from backends.artifacts import ArtifactStore
from backends.store import utcnow
from backends.store.artifact_records import ArtifactRecords

__all__ = ["ArtifactJanitor", "PurgeReport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    runs: int
    files: int


class ArtifactJanitor:
    def __init__(
        self, records: ArtifactRecords, artifacts: ArtifactStore, *, retention: timedelta
    ) -> None:
        self.records = records
        self.artifacts = artifacts
        self.retention = retention

    def purge_expired(
        self, *, now: datetime | None = None, retention: timedelta | None = None, batch: int = 500
    ) -> PurgeReport:
        """Remove the outputs of runs that finished more than the retention ago."""
        cutoff = (now or utcnow()) - (self.retention if retention is None else retention)
        runs = files = 0
        while job_run_ids := self.records.runs_to_purge(finished_before=cutoff, limit=batch):
            purged = []
            for job_run_id in job_run_ids:
                try:
                    files += self.artifacts.purge_run(job_run_id)
                except OSError as exc:
                    # Left unmarked: the next round tries again.
                    log.warning("could not remove the artifacts of run %s: %s", job_run_id, exc)
                    continue
                purged.append(job_run_id)
            runs += self.records.mark_purged(job_run_ids=purged, at=utcnow())
            if len(purged) < len(job_run_ids):
                break  # the store is failing; do not spin on the same runs
        if runs:
            log.info("removed %d artifact files of %d finished runs", files, runs)
        return PurgeReport(runs=runs, files=files)
