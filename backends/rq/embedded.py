"""RQ inside one process, for the embedded default: fakeredis, worker threads, a scheduler thread.

A forking worker would lose jobs with an in-process fakeredis (the child
writes to its own copy), and RQ's own scheduler forks too. So the embedded
default runs ``SimpleWorker`` subclasses in threads, with timer-based job
timeouts instead of signals, and a thread that moves due retries from the
scheduled registries back onto their queues.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.timeouts import TimerDeathPenalty

from backends.rq.scheduler import SchedulerThread
from backends.rq.serialization import JOB_SERIALIZER

__all__ = ["EmbeddedWorkers", "ThreadWorker"]

# A worker checks for a stop request between blocking dequeues of this many seconds.
_POLL_TTL = 16  # RQ's dequeue timeout is worker_ttl - 15 = 1 s


class ThreadWorker(SimpleWorker):
    """A SimpleWorker that can live in a non-main thread (signals only work in the main one)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def stop_soon(self) -> None:
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        # RQ's dequeue loop swallows its own timeouts and never looks at the stop flag;
        # waking every second lets `stop_soon` end an idle thread promptly.
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if result is not None:
                return result
        raise StopRequested


class EmbeddedWorkers:
    """``count`` RQ worker threads and one retry-scheduler thread over ``queues``."""

    def __init__(self, redis: Redis, queues: Sequence[str], *, count: int = 4) -> None:
        self.redis = redis
        self.queue_names = list(queues)
        self.count = count
        self._workers: list[ThreadWorker] = []
        self._threads: list[threading.Thread] = []
        self._scheduler: SchedulerThread | None = None

    def start(self) -> None:
        for index in range(self.count):
            worker = ThreadWorker(
                [
                    Queue(name, connection=self.redis, serializer=JOB_SERIALIZER)
                    for name in self.queue_names
                ],
                connection=self.redis,
                serializer=JOB_SERIALIZER,
                name=f"figway-embedded-{index}-{id(self):x}",
                worker_ttl=_POLL_TTL,
            )
            thread = threading.Thread(
                target=worker.work,
                kwargs={"logging_level": "WARNING"},
                name=f"rq-worker-{index}",
                daemon=True,
            )
            self._workers.append(worker)
            self._threads.append(thread)
        self._scheduler = SchedulerThread(
            self.redis, self.queue_names, name=f"figway-embedded-{id(self):x}", interval=0.25
        )
        for thread in self._threads:
            thread.start()
        self._scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to stop and wait up to ``timeout`` seconds in all.

        A node still running after that is abandoned with the process; the next
        start of the embedded gateway records its run as lost.
        """
        if self._scheduler is not None:
            self._scheduler.stop()
        for worker in self._workers:
            worker.stop_soon()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
