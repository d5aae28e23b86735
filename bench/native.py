"""The native-RQ side of the comparison: the same DAGs enqueued straight onto RQ.

Jobs run :func:`bench.jobs.noop` on figway's ``default`` queue, so the very
``figway worker rq`` processes that run figway's nodes run them too. They are
written with figway's JSON serializer: its workers refuse any other (and
figway's own enqueue pays for the same serializer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from backends.rq.serialization import JOB_SERIALIZER
from bench.jobs import noop
from bench.workflows import BenchDag

__all__ = ["QUEUE", "enqueue_dag", "fetch_jobs", "native_job_id", "queue", "wait_for_jobs"]

#: figway puts a workflow of noop nodes without tags on this pool; the baseline shares it.
QUEUE = "default"


def queue(redis: Redis) -> Queue:
    """The shared ``default`` queue, as figway's workers read it."""
    return Queue(QUEUE, connection=redis, serializer=JOB_SERIALIZER)


def native_job_id(run_id: str, node_id: str) -> str:
    """RQ job ids allow only letters, digits, ``_`` and ``-``.

    >>> native_job_id("r1", "l00_n01")
    'bn-r1-l00_n01'
    """
    return f"bn-{run_id}-{node_id}"


def enqueue_dag(queue: Queue, dag: BenchDag, run_id: str, *, per_job: bool = False) -> None:
    """Enqueue one job per node with ``depends_on`` its upstream jobs.

    By default all jobs go in one ``enqueue_many`` call without a pipeline of our
    own, exactly as figway's RQ executor does; ``per_job`` enqueues them one
    ``enqueue`` call at a time in level order instead.
    """
    if per_job:
        for node in dag.level_order():
            queue.enqueue(
                noop,
                job_id=native_job_id(run_id, node),
                depends_on=[native_job_id(run_id, up) for up in dag.upstream[node]] or None,
            )
        return
    queue.enqueue_many(
        [
            Queue.prepare_data(
                noop,
                job_id=native_job_id(run_id, node),
                depends_on=[native_job_id(run_id, up) for up in dag.upstream[node]] or None,
            )
            for node in dag.level_order()
        ]
    )


def fetch_jobs(redis: Redis, job_ids: Sequence[str]) -> dict[str, Job]:
    """The jobs that still exist, by id (one round trip)."""
    jobs = Job.fetch_many(list(job_ids), connection=redis, serializer=JOB_SERIALIZER)
    return {job.id: job for job in jobs if job is not None}


def wait_for_jobs(
    redis: Redis, job_ids: Sequence[str], *, timeout: float, poll_seconds: float
) -> datetime:
    """Wait until every job finished; returns the latest ``ended_at`` among them."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = fetch_jobs(redis, job_ids)
        statuses = {
            job_id: jobs[job_id].get_status(refresh=False) if job_id in jobs else None
            for job_id in job_ids
        }
        broken = {
            j: s
            for j, s in statuses.items()
            if s in (None, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED)
        }
        if broken:
            raise RuntimeError(f"native RQ jobs did not finish: {broken}")
        if all(status == JobStatus.FINISHED for status in statuses.values()):
            ended = [jobs[j].ended_at for j in job_ids]
            if all(e is not None for e in ended):
                return max(e for e in ended if e is not None)
        if time.monotonic() > deadline:
            raise TimeoutError(f"native RQ jobs still unfinished after {timeout:.0f} s: {statuses}")
        time.sleep(poll_seconds)
