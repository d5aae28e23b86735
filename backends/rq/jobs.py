"""The function RQ workers run for every node.

An RQ job carries only ``(job_run_id, node_id, retries)``; the plan, the
inputs and the outputs live in the database, reached through the process's
node runtime (see :mod:`backends.runtime.bootstrap`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, get_current_job

from backends.model.errors import FigwayError, NodeAttemptFailedError
from backends.nodes.connections import close_all_pools, in_forked_child
from backends.rq.serialization import JOB_SERIALIZER
from backends.runtime.attempts import Outcome
from backends.runtime.bootstrap import current_runtime

__all__ = ["drop_jobs", "job_id_for", "run_node"]


def job_id_for(job_run_id: str, node_id: str) -> str:
    """A stable RQ job id for a node of a run (RQ allows only ``[A-Za-z0-9_-]``).

    >>> job_id_for("run-1", "extract")
    'fw-1839c967e1328de86b45ba05'
    """
    digest = hashlib.blake2b(f"{job_run_id}\x00{node_id}".encode(), digest_size=12).hexdigest()
    return f"fw-{digest}"


def run_node(job_run_id: str, node_id: str, retries: int) -> dict[str, str]:
    """Run the current attempt of one node (an RQ job)."""
    job = get_current_job()
    if job is None:
        raise FigwayError("run_node must run inside an RQ job")
    # RQ decrements retries_left as it schedules each retry: attempt 1 sees all of them.
    attempt = retries - (job.retries_left or 0) + 1 if retries else 1
    try:
        result = current_runtime().execute(job_run_id=job_run_id, node_id=node_id, attempt=attempt)
    finally:
        if in_forked_child():
            # A work horse ends with os._exit: say goodbye to the databases first, so
            # they see a closed session, not a dropped one.
            close_all_pools()
    if result.outcome is Outcome.FAILED:
        drop_jobs(job.connection, (job_id_for(job_run_id, n) for n in result.skipped))
    if result.outcome in (Outcome.RETRY, Outcome.FAILED):
        raise NodeAttemptFailedError(result.error)
    return {"outcome": result.outcome.value}


def drop_jobs(connection: Redis, job_ids: Iterable[str]) -> None:
    """Cancel jobs that must never run (downstream of a failure, or of a killed run)."""
    for job_id in job_ids:
        try:
            Job.fetch(job_id, connection=connection, serializer=JOB_SERIALIZER).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            continue  # gone already, or cancelled twice
