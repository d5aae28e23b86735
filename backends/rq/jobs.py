"""The function RQ workers run for every node, and how it reaches the node runtime.

An RQ job carries only ``(job_run_id, node_id, retries)``; the plan, the
inputs and the outputs live in the database. A worker process installs its
:class:`~backends.runtime.NodeRuntime` once (``figway worker rq`` does, and so
does the embedded default) before it takes jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, get_current_job

from backends.errors import FigwayError
from backends.runtime import NodeRuntime, Outcome

__all__ = ["NodeAttemptFailed", "install_runtime", "job_id_for", "run_node"]

_runtime: NodeRuntime | None = None


class NodeAttemptFailed(Exception):
    """Raised so RQ records the attempt as failed (and retries it if attempts are left)."""


def install_runtime(runtime: NodeRuntime | None) -> None:
    """Give this process's RQ jobs the runtime they record through."""
    global _runtime
    _runtime = runtime


def job_id_for(job_run_id: str, node_id: str) -> str:
    """A stable RQ job id for a node of a run (RQ allows only ``[A-Za-z0-9_-]``).

    >>> job_id_for("run-1", "extract")
    'fw-1839c967e1328de86b45ba05'
    """
    digest = hashlib.blake2b(f"{job_run_id}\x00{node_id}".encode(), digest_size=12).hexdigest()
    return f"fw-{digest}"


def run_node(job_run_id: str, node_id: str, retries: int) -> dict[str, str]:
    """Run the current attempt of one node (an RQ job)."""
    if _runtime is None:
        raise FigwayError("this RQ worker has no figway runtime; start it with `figway worker rq`")
    job = get_current_job()
    if job is None:
        raise FigwayError("run_node must run inside an RQ job")
    # RQ decrements retries_left as it schedules each retry: attempt 1 sees all of them.
    attempt = retries - (job.retries_left or 0) + 1 if retries else 1
    result = _runtime.execute(job_run_id=job_run_id, node_id=node_id, attempt=attempt)
    if result.outcome is Outcome.FAILED:
        drop_jobs(job.connection, (job_id_for(job_run_id, n) for n in result.skipped))
    if result.outcome in (Outcome.RETRY, Outcome.FAILED):
        raise NodeAttemptFailed(result.error)
    return {"outcome": result.outcome.value}


def drop_jobs(connection: Redis, job_ids: Iterable[str]) -> None:
    """Cancel jobs that must never run (downstream of a failure, or of a killed run)."""
    for job_id in job_ids:
        try:
            Job.fetch(job_id, connection=connection).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            continue  # gone already, or cancelled twice
