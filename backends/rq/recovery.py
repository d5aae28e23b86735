"""Settling RQ jobs whose worker died while it held them.

RQ itself notices an abandoned job only when its execution's heartbeat has
expired and a worker's maintenance runs. figway settles it sooner, in two
places: the reconciler (its worker stopped heartbeating) and a worker that
starts under the name of one that was killed (the dead one's jobs would
otherwise look held by a live worker). Both end the same way as RQ would:
retried while the job has retries left, else failed with the observed cause.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result

from backends.rq.serialization import JOB_SERIALIZER

__all__ = ["FAILURE_TTL", "release_abandoned"]

#: A failed job stays in RQ's FailedJobRegistry this long, for `rq info` and debugging.
FAILURE_TTL = 7 * 24 * 3_600


def release_abandoned(redis: Redis, job: Job, cause: str) -> bool:
    """Retry an abandoned STARTED job if RQ would, else fail it; True when retried.

    ``cause`` is recorded as the failure's text, so `rq info` shows why.
    """
    queue = Queue(job.origin, connection=redis, serializer=JOB_SERIALIZER)
    with redis.pipeline() as pipeline:
        # RQ 3 keys started jobs by execution; its registry's remove(job) is not implemented.
        StartedJobRegistry(job.origin, connection=redis).remove_executions(job, pipeline=pipeline)
        if job.should_retry:
            job.retry(queue, pipeline)
            pipeline.execute()
            return True
        job.set_status(JobStatus.FAILED, pipeline=pipeline)
        # Listed with the other failures, so `rq info` and RQ's dashboards show it.
        FailedJobRegistry(job.origin, connection=redis).add(
            job, ttl=FAILURE_TTL, exc_string=cause, pipeline=pipeline
        )
        # Where RQ keeps a failure's text (job.latest_result()), so the reconciler can quote it.
        Result.create_failure(job, ttl=FAILURE_TTL, exc_string=cause, pipeline=pipeline)
        pipeline.execute()
    return False
