"""The RQ worker `figway worker rq` runs: RQ's own, made to ride out outages.

RQ's worker quits on the first Redis error it does not expect (a busy worker's
horse monitor raises ``ConnectionError`` within a second of Redis going away),
and `rq worker` leaves restarting it to someone else. figway's worker:

- keeps a busy worker waiting on its work horse through an outage: the
  monitor's heartbeats skip while Redis is away, and the job's own bookkeeping
  (start, success, failure) waits for Redis to come back instead of failing;
- runs RQ's work loop under :func:`run_worker`, which starts it again with
  backoff whenever it ends for any reason but a stop request;
- puts itself back into ``rq:workers`` on every heartbeat, so a Redis restart
  does not hide it from health checks;
- takes over its own name at once after it was killed outright, settling the
  jobs the dead process held (see :mod:`backends.rq.recovery`);
- runs RQ's scheduler in a thread (:mod:`backends.rq.scheduler`), not a forked
  child that could outlive it, and RQ's registry maintenance every few seconds
  (dependents parked ready-to-enqueue are released promptly).

The database side of an outage is the node runtime's: it waits for PostgreSQL
to record a start or an outcome (:mod:`backends.runtime.attempts`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import SimpleWorker, Worker, worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.utils import now as utcnow
from rq.utils import utcparse
from rq.worker import BaseWorker

from backends.model.errors import FigwayError
from backends.rq.recovery import release_abandoned
from backends.rq.scheduler import SchedulerThread
from backends.rq.serialization import JOB_SERIALIZER
from backends.rq.store_relay import StoreRelay
from backends.runtime.bootstrap import current_runtime

__all__ = [
    "JOB_MONITORING_SECONDS",
    "MAINTENANCE_SECONDS",
    "WORKER_TTL_SECONDS",
    "Backoff",
    "WorkerNameTakenError",
    "build_worker",
    "run_worker",
    "worker_redis",
]

log = logging.getLogger(__name__)

#: RQ's worker TTL. An idle worker heartbeats every TTL - 15 s (RQ's rule), so 30 means
#: every 15 s instead of every 405 s: health checks and the reconciler can tell a dead
#: worker from an idle one within the default one-minute silence window.
WORKER_TTL_SECONDS = 30
#: A busy worker heartbeats this often (seconds) while its work horse runs a node.
JOB_MONITORING_SECONDS = 5
#: RQ's registry maintenance (abandoned jobs, dependents parked ready-to-enqueue) runs
#: this often (seconds) instead of RQ's ten minutes; one worker at a time does it.
MAINTENANCE_SECONDS = 5
#: The longest wait (seconds) between tries while Redis is away: a worker is back at
#: work at most this long after Redis is, well within the reconciler's bound.
OUTAGE_WAIT_CAP = 5.0
#: Errors that mean "Redis is away for now", as opposed to a refused command.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError)

T = TypeVar("T")


class WorkerNameTakenError(FigwayError):
    """A live worker already runs under the name asked for (a configuration error)."""


class Backoff:
    """Waits that double from ``first`` up to ``cap`` seconds, with jitter; ``reset`` starts over.

    >>> b = Backoff(first=1, cap=4, jitter=0)
    >>> [b.next() for _ in range(4)]
    [1.0, 2.0, 4.0, 4.0]
    """

    def __init__(
        self, *, first: float = 0.5, cap: float = OUTAGE_WAIT_CAP, jitter: float = 0.2
    ) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        wait = self._next
        self._next = min(self._next * 2, self.cap)
        return float(wait * (1 + random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._next = self.first


def patiently(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, tried again with backoff for as long as Redis is away.

    For the bookkeeping of a job whose node has run (or is about to): giving up
    would leave figway's record and RQ's apart, and nothing else can proceed
    without Redis anyway.
    """
    backoff = Backoff()
    while True:
        try:
            return call(*args, **kwargs)
        except OUTAGE_ERRORS as exc:
            wait = backoff.next()
            log.warning("%s: Redis unreachable (%s); trying again in %.1f s", what, exc, wait)
            time.sleep(wait)


def worker_redis(url: str) -> Redis:
    """A Redis client for a worker: short blips are retried inside each command."""
    return Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.2), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=5,
        health_check_interval=30,
    )


class _RidesOutOutages(BaseWorker):
    """What figway changes in RQ's worker; mixed into the forking and the simple worker."""

    #: Set when the process was asked to stop (SIGINT/SIGTERM), as opposed to RQ's loop
    #: ending on an error: only then does :func:`run_worker` return.
    stop_asked = False
    #: An idle worker's longest wait between tries while Redis is away (RQ's default is a
    #: minute, which a worker could sleep through after Redis came back).
    max_connection_wait_time = OUTAGE_WAIT_CAP

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            worker_registration.register(self, pipeline)
            return
        with self.connection.pipeline() as own:
            super().heartbeat(timeout, pipeline=own)
            # Back into rq:workers every beat: a Redis restart empties that set, and a
            # worker missing from it is invisible to `rq info` and to figway's health.
            worker_registration.register(self, own)
            hash_was_gone = own.execute()[0] == 1  # HSET created the field: no record left
        if hash_was_gone and self.birth_date is not None:
            self.connection.hset(self.key, mapping=self.serialize())

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except OUTAGE_ERRORS as exc:
            # RQ would let this end the worker while its horse runs on unwatched. The horse
            # needs no Redis to run a node; the next beat after the outage catches up.
            log.warning("Worker %s: heartbeat skipped, Redis unreachable (%s)", self.name, exc)

    def prepare_execution(self, job: Job) -> Any:
        return patiently(f"job {job.id} start", super().prepare_execution, job)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        patiently(
            f"job {job.id} start",
            super().prepare_job_execution,
            job,
            remove_from_intermediate_queue,
        )

    def handle_job_success(
        self, job: Job, queue: Any, started_job_registry: Any, execution: Any
    ) -> None:
        patiently(
            f"job {job.id} success",
            super().handle_job_success,
            job,
            queue,
            started_job_registry,
            execution,
        )

    def handle_job_failure(self, job: Job, queue: Any, *args: Any, **kwargs: Any) -> None:
        patiently(f"job {job.id} failure", super().handle_job_failure, job, queue, *args, **kwargs)

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except OUTAGE_ERRORS:
            # RQ could not record the death; the next loop takes the name over. Its
            # command listener must not outlive this loop, so it is stopped here.
            thread = getattr(self, "pubsub_thread", None)
            if thread is not None:
                thread.stop()
                thread.join(timeout=1)
            raise

    def register_birth(self) -> None:
        self._take_over_dead_namesake()
        super().register_birth()  # type: ignore[no-untyped-call]

    def _take_over_dead_namesake(self) -> None:
        """Clear the record of a dead worker of this name, settling the jobs it held.

        Taken over: a worker of this host whose process is gone (or that was this
        very process, before a restart of the work loop), or one of another host
        that has not heartbeat for a worker TTL (a busy worker beats every 5 s, an
        idle one every 15). A live one keeps its name and this worker refuses to start.
        """
        fields = ["pid", "hostname", "death", "last_heartbeat"]
        pid_text, host_text, death, beat_text = self.connection.hmget(self.key, fields)
        if pid_text is None or death is not None:
            return
        pid = int(pid_text)
        host = host_text.decode() if isinstance(host_text, bytes) else ""
        if host == socket.gethostname():
            alive = pid != os.getpid() and _process_exists(pid)
        else:
            beat = utcparse(beat_text.decode()) if isinstance(beat_text, bytes) else None
            silent = (utcnow() - beat).total_seconds() if beat is not None else math.inf
            alive = silent < self.worker_ttl
        if alive:
            raise WorkerNameTakenError(
                f"a live RQ worker named {self.name!r} runs already (pid {pid} on {host or '?'}); "
                "give this one another --name"
            )
        cause = f"its worker {self.name} (pid {pid}) was gone when a worker of that name started"
        for queue in self.queues:
            registry = StartedJobRegistry(queue.name, connection=self.connection)
            for job in Job.fetch_many(
                registry.get_job_ids(cleanup=False), self.connection, serializer=JOB_SERIALIZER
            ):
                if job is not None and job.worker_name == self.name:
                    retried = release_abandoned(self.connection, job, cause)
                    log.warning(
                        "Worker %s: job %s %s (%s)",
                        self.name,
                        job.id,
                        "retried" if retried else "failed",
                        cause,
                    )
        with self.connection.pipeline() as pipeline:
            worker_registration.unregister(self, pipeline)
            pipeline.delete(self.key, self.executions_key)
            pipeline.execute()


class FigwayWorker(_RidesOutOutages, Worker):
    """RQ's forking worker (a work horse per job), riding out outages.

    Its horses record their nodes through the worker's own database connection
    (:mod:`backends.rq.store_relay`) instead of connecting again in every fork.
    """

    _relay: StoreRelay | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        relay = self._relay = StoreRelay(current_runtime().store)
        try:
            super().fork_work_horse(job, queue)  # returns in the worker only
        except BaseException:
            relay.close()
            raise
        finally:
            self._relay = None
        relay.in_worker()

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        if self._relay is not None:
            runtime = current_runtime()
            runtime.store = self._relay.in_horse(runtime.store)
        super().main_work_horse(job, queue)


class FigwaySimpleWorker(_RidesOutOutages, SimpleWorker):
    """RQ's in-process worker, riding out outages."""


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def build_worker(
    redis: Redis, queues: Sequence[str], *, simple: bool = False, name: str | None = None
) -> BaseWorker:
    """figway's forking worker (or the simple one) on ``queues``."""
    worker_class = FigwaySimpleWorker if simple else FigwayWorker
    return worker_class(
        list(queues),
        connection=redis,
        name=name,
        worker_ttl=WORKER_TTL_SECONDS,
        job_monitoring_interval=JOB_MONITORING_SECONDS,
        maintenance_interval=MAINTENANCE_SECONDS,
        serializer=JOB_SERIALIZER,
    )


def run_worker(
    build: Callable[[], BaseWorker], *, burst: bool = False, logging_level: str = "INFO"
) -> None:
    """Run RQ's work loop, starting it again whenever it ends for any reason but a stop request.

    ``build`` makes a fresh worker each time (RQ's worker object is not reusable
    once its loop ended); all of them share one name, and one scheduler thread
    runs beside them for the life of this call. Returns when the process was
    asked to stop (SIGINT/SIGTERM), or in ``burst`` mode when the queues are empty.
    Raises :class:`WorkerNameTakenError` when a live worker holds the name.
    """
    backoff = Backoff(first=1.0)
    stopping = threading.Event()
    first = _build_when_redis_answers(build, backoff, stopping)
    if first is None:
        return
    scheduler = SchedulerThread(first.connection, first.queue_names(), name=f"figway-{first.name}")
    scheduler.start()
    worker: BaseWorker | None = first
    try:
        while not stopping.is_set():
            current = worker or _build_when_redis_answers(build, backoff, stopping)
            worker = None
            if current is None:
                return
            started = time.monotonic()
            try:
                current.work(burst=burst, logging_level=logging_level, with_scheduler=False)
            except OUTAGE_ERRORS as exc:
                log.warning("Worker %s: Redis unreachable (%s)", current.name, exc)
            except RedisError as exc:
                log.error("Worker %s: Redis refused a command (%s)", current.name, exc)
            if getattr(current, "stop_asked", False) or burst:
                return
            if time.monotonic() - started > 60:
                backoff.reset()  # it had been working: a new problem, not the same one
            _wait_for_redis(current.connection, backoff, stopping)
            if not stopping.is_set():
                log.warning("Worker %s: starting its work loop again", current.name)
    finally:
        scheduler.stop()


def _build_when_redis_answers(
    build: Callable[[], BaseWorker], backoff: Backoff, stopping: threading.Event
) -> BaseWorker | None:
    """``build()``, tried again with backoff while Redis is away (RQ's worker asks it for
    its address); None when SIGINT/SIGTERM came meanwhile."""
    while not stopping.is_set():
        try:
            return build()
        except OUTAGE_ERRORS as exc:
            log.warning("cannot start the worker yet, Redis unreachable (%s)", exc)
            with _stopping_on_signals(stopping):
                stopping.wait(backoff.next())
    return None


@contextmanager
def _stopping_on_signals(stopping: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stopping`` while outside RQ's work loop (which has its own)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_for_redis(redis: Redis, backoff: Backoff, stopping: threading.Event) -> None:
    """Sleep with backoff until Redis answers, or until SIGINT/SIGTERM sets ``stopping``."""
    with _stopping_on_signals(stopping):
        while not stopping.wait(backoff.next()):
            try:
                redis.ping()
                return
            except RedisError as exc:
                log.warning("waiting for Redis: %s", exc)
