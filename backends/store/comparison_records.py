"""The records the comparison report reads: finished client runs and shadow comparisons.

Only figway's own tables are read, so the report works with no Prometheus.
The figures are computed by the gateway (``gateway/reports/comparison.py``); this module
only selects the rows, with the definitions the report documents:

- a client run is one with ``runs.shadow_of IS NULL``;
- a run counts in the window when its ``finished_at`` is in it;
- its retries are the sum over its nodes of ``max(attempts - 1, 0)``;
- a shadow comparison counts when its ``compared_at`` is in the window, and
  belongs to the shadow's backend (the backend being tried out).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select

from backends.model.status import RUN_TERMINAL_VALUES, RunStatus
from backends.store.models import NodeRun, Run
from backends.store.transactions import Transactions

__all__ = ["TIMED_RUN_COLUMNS", "FinishedRunRecord", "Reports"]

#: What the judge needs of a finished run: its workflow, side, outcome and three moments.
TIMED_RUN_COLUMNS = (
    Run.workflow_id,
    Run.backend,
    Run.status,
    Run.submitted_at,
    Run.started_at,
    Run.finished_at,
)


#: Rows fetched from the database at a time: a week of runs is never held in memory at once.
_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class FinishedRunRecord:
    """One client run that finished: what the report needs of it, and nothing else."""

    workflow_id: str
    backend: str
    status: RunStatus
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    retries: int


class Reports(Transactions):
    def finished_runs(
        self, *, since: datetime, workflows: Collection[str] = ()
    ) -> Iterator[FinishedRunRecord]:
        """Client runs that finished (succeeded, failed or cancelled) at or after ``since``,
        in the order they finished.

        Rows are streamed in batches inside one transaction, so the caller
        should consume the iterator at once; ``workflows`` (empty: all) narrows
        the workflows read.
        """
        retries = (
            select(
                func.coalesce(
                    func.sum(case((NodeRun.attempts > 1, NodeRun.attempts - 1), else_=0)), 0
                )
            )
            .where(NodeRun.job_run_id == Run.job_run_id)
            .scalar_subquery()
        )
        statement = select(*TIMED_RUN_COLUMNS, retries).where(
            Run.shadow_of.is_(None),
            Run.finished_at >= since,
            Run.status.in_(RUN_TERMINAL_VALUES),
        )
        # In the order they finished: the judge pairs each side's runs in that order.
        statement = statement.order_by(Run.finished_at, Run.job_run_id)
        if workflows:
            statement = statement.where(Run.workflow_id.in_(sorted(set(workflows))))
        with self._transaction() as session:
            rows = session.execute(statement.execution_options(yield_per=_BATCH))
            for workflow_id, backend, status, submitted, started, finished, run_retries in rows:
                if finished is None:  # excluded by the query; this tells mypy
                    continue
                yield FinishedRunRecord(
                    workflow_id=workflow_id,
                    backend=backend,
                    status=RunStatus(status),
                    submitted_at=submitted,
                    started_at=started,
                    finished_at=finished,
                    retries=int(run_retries or 0),
                )
