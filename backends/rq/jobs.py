"""The function RQ workers run for every node, and the jobs that carry it.

An RQ job carries only ``(job_run_id, node_id, retries)``; the plan, the
inputs and the outputs live in the database, reached through the process's
node runtime (see :mod:`backends.runtime.bootstrap`).

Who starts a node whose upstream nodes have all succeeded is the job's
``release`` (in its meta):

- ``figway`` (the default): the run is submitted with the jobs of its root
  nodes only, and the job whose success made nodes ready enqueues their jobs
  itself, right after recording that success. The database names each ready
  node to exactly one finishing parent (the run's row is locked while it
  decides), so every node is enqueued once, with no wait on RQ's dependency
  machinery (a WATCH per dependent, and its dependency checks when a parent
  ends). A job that dies between recording and enqueueing leaves a ready node
  with no job: the reconciler gives it one.
- ``rq``: every job is enqueued at submission, each waiting on its upstream
  jobs with RQ's ``depends_on``, and RQ releases it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, Job, get_current_job
from rq.queue import EnqueueData

from backends.model.errors import FigwayError, NodeAttemptFailedError
from backends.model.workflow import NodeSpec
from backends.nodes.connections import close_all_pools, in_forked_child
from backends.rq.recovery import FAILURE_TTL
from backends.rq.serialization import JOB_SERIALIZER
from backends.runtime.attempts import Outcome
from backends.runtime.bootstrap import current_runtime

__all__ = [
    "FIGWAY_RELEASES",
    "RELEASES",
    "RESULT_TTL",
    "RQ_RELEASES",
    "drop_jobs",
    "job_id_for",
    "node_job",
    "rq_retry_interval",
    "run_node",
]

log = logging.getLogger(__name__)

#: Who starts ready nodes (see the module docstring).
FIGWAY_RELEASES = "figway"
RQ_RELEASES = "rq"
RELEASES = (FIGWAY_RELEASES, RQ_RELEASES)
#: RQ keeps a finished job's result this long (seconds); figway's database keeps the record.
RESULT_TTL = 3_600


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
    if result.ready and job.meta.get("release") == FIGWAY_RELEASES:
        _release(job, job_run_id, result.ready)
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


def rq_retry_interval(delay_seconds: float) -> int:
    """RQ's retry interval for a delay, so a retry never runs early.

    RQ schedules in whole seconds and truncates the due time, which can fire a
    retry up to a second before its interval; one more second makes the delay a
    floor (a retry waits ``delay`` to ``delay + 2`` s).

    >>> rq_retry_interval(0), rq_retry_interval(0.4), rq_retry_interval(30)
    (0, 2, 31)
    """
    return math.ceil(delay_seconds) + 1 if delay_seconds > 0 else 0


def node_job(
    *,
    job_run_id: str,
    workflow_id: str,
    node_id: str,
    spec: NodeSpec,
    release: str,
    attempts_done: int = 0,
    depends_on: Sequence[str] = (),
) -> EnqueueData:
    """The RQ job of a node: its next attempt is ``attempts_done + 1``.

    The job function derives the attempt from ``retries - retries_left + 1``, so
    a job made again after ``attempts_done`` attempts carries fewer retries.
    """
    retries_left = spec.retries - attempts_done
    retry = None
    if retries_left > 0:
        retry = Retry(max=retries_left, interval=rq_retry_interval(spec.retry_delay_seconds))
    upstream: list[Dependency | Job | str] = list(depends_on)
    return Queue.prepare_data(
        run_node,
        args=(job_run_id, node_id, spec.retries),
        job_id=job_id_for(job_run_id, node_id),
        description=f"{workflow_id}/{node_id} (run {job_run_id})",
        depends_on=upstream or None,
        retry=retry,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        meta={
            "job_run_id": job_run_id,
            "node_id": node_id,
            "workflow_id": workflow_id,
            "release": release,
        },
    )


def _release(parent: Job, job_run_id: str, ready: Mapping[str, NodeSpec]) -> None:
    """Enqueue the jobs of the nodes a success made ready, on the parent's queue.

    A node that has a job already (a run submitted by RQ's ``depends_on``, or
    given one by the reconciler) keeps it. A failure here is logged, not raised:
    the node succeeded, and the reconciler gives a ready node with no job one.
    """
    connection = parent.connection
    job_ids = [job_id_for(job_run_id, node_id) for node_id in ready]
    try:
        with connection.pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.exists(Job.key_for(job_id))
            held = pipeline.execute()
        workflow_id = str(parent.meta.get("workflow_id", ""))
        jobs = [
            node_job(
                job_run_id=job_run_id,
                workflow_id=workflow_id,
                node_id=node_id,
                spec=spec,
                release=FIGWAY_RELEASES,
            )
            for (node_id, spec), exists in zip(ready.items(), held, strict=True)
            if not exists
        ]
        if jobs:
            queue = Queue(
                parent.origin,
                connection=connection,
                default_timeout=None if parent.timeout is None else int(parent.timeout),
                serializer=JOB_SERIALIZER,
            )
            queue.enqueue_many(jobs)
    except RedisError as exc:
        log.warning(
            "run %s: could not enqueue %s, ready now (%s); the reconciler will",
            job_run_id,
            ", ".join(ready),
            exc,
        )
