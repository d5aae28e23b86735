"""The RQ worker `figway worker rq` runs: RQ's own, tuned so a dead one is noticed soon."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import SimpleWorker, Worker
from rq.worker import BaseWorker

__all__ = ["WORKER_TTL_SECONDS", "build_worker"]

#: RQ's worker TTL. An idle worker heartbeats every TTL - 15 s (RQ's rule), so 30 means
#: every 15 s instead of every 405 s: health checks and the reconciler can tell a dead
#: worker from an idle one within the default one-minute silence window.
WORKER_TTL_SECONDS = 30
#: A busy worker heartbeats this often (seconds) while its work horse runs a node.
JOB_MONITORING_SECONDS = 5


def build_worker(
    redis: Redis, queues: Sequence[str], *, simple: bool = False, name: str | None = None
) -> BaseWorker:
    """RQ's forking ``Worker`` (or ``SimpleWorker``) on figway's queues."""
    worker_class = SimpleWorker if simple else Worker
    return worker_class(
        list(queues),
        connection=redis,
        name=name,
        worker_ttl=WORKER_TTL_SECONDS,
        job_monitoring_interval=JOB_MONITORING_SECONDS,
    )
