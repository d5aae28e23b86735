"""Moving due retries from RQ's scheduled registries back onto their queues, in a thread.

RQ's own scheduler runs in a forked child of the worker; a worker killed
outright leaves that child running, holding the scheduler lock. figway runs
the same rounds in a thread of the worker instead, so nothing outlives it,
and a round that fails (Redis away) is simply tried again. The scheduler is
named after its worker, so a worker restarted under the same name takes its
predecessor's lock over at once instead of waiting a minute for it to lapse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from redis import Redis
from rq.scheduler import RQScheduler

from backends.rq.serialization import JOB_SERIALIZER

__all__ = ["SchedulerThread"]

log = logging.getLogger(__name__)


class SchedulerThread:
    """One thread that enqueues due scheduled jobs of ``queues`` every ``interval`` seconds."""

    def __init__(
        self, redis: Redis, queues: Sequence[str], *, name: str, interval: float = 1.0
    ) -> None:
        self._scheduler = RQScheduler(
            list(queues), connection=redis, interval=1, name=name, serializer=JOB_SERIALIZER
        )
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rq-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self._scheduler.release_locks()  # type: ignore[no-untyped-call]
        except Exception as exc:  # Redis away: the lock lapses by itself within a minute
            log.warning("could not release the RQ scheduler lock: %s", exc)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                # Taken (or kept) every round: the lock is how several workers' schedulers
                # avoid enqueueing one due job twice, and it may have expired in an outage.
                self._scheduler.acquire_locks()  # type: ignore[no-untyped-call]
                self._scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
                failing = False
            except Exception as exc:  # keep going: a scheduler that dies strands every retry
                if not failing:
                    log.warning("RQ scheduler round failed (%s); trying again", exc)
                failing = True
