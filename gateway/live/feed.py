"""The feed that follows runs for WebSocket clients: one reader per gateway, many followers.

Every transition of every run is a row of the journal (``transitions``),
written by whichever worker or gateway made it, on either backend. The feed
keeps, per follower, the id of the last row it delivered, and reads what
follows for the runs someone follows: when PostgreSQL notifies it (a trigger
on the journal; see :mod:`gateway.live.listener`), and every
``poll_seconds`` whatever happens (SQLite has no notifications, and a
notification can be lost while the listener reconnects). So a follower
connected to any gateway replica sees every transition, in order, once.

The reader is one thread; followers are coroutines. It never waits on a
follower: messages go into the follower's queue on its event loop, and a
follower with more than ``buffer`` messages waiting is cut off (its socket is
closed with a reason) instead of making the gateway hold an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from backends.model.errors import FigwayError
from backends.model.status import RUN_TERMINAL
from backends.store.journal import Journal, JournalEntry

__all__ = ["OVERFLOW", "Follower", "RunFeed", "message_of"]

log = logging.getLogger(__name__)

#: Put in a follower's queue, last, when it fell too far behind.
OVERFLOW: dict[str, Any] = {"type": "overflow"}


def message_of(entry: JournalEntry, backend: str) -> dict[str, Any]:
    """One transition as clients receive it."""
    return {
        "type": "run" if entry.node_id is None else "node",
        "job_run_id": entry.job_run_id,
        "node_id": entry.node_id,
        "status": entry.status,
        "attempt": entry.attempt,
        "at": entry.at.isoformat().replace("+00:00", "Z"),
        "backend": backend,
        "error": entry.error,
        "terminal": entry.node_id is None and entry.status in RUN_TERMINAL,
    }


@dataclass(eq=False)
class Follower:
    """One client following one run: where it is in the journal, and its queue."""

    job_run_id: str
    after_id: int
    loop: asyncio.AbstractEventLoop
    limit: int
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    cut_off: bool = False

    def _put(self, message: dict[str, Any]) -> None:
        """On the follower's loop: queue the message, or cut the follower off."""
        if self.cut_off:
            return
        if self.queue.qsize() >= self.limit:
            self.cut_off = True
            self.queue.put_nowait(OVERFLOW)
            return
        self.queue.put_nowait(message)


class RunFeed:
    def __init__(self, journal: Journal, *, poll_seconds: float, buffer: int = 1_000) -> None:
        self.journal = journal
        self.poll_seconds = poll_seconds
        self.buffer = buffer
        self._followers: dict[str, set[Follower]] = {}
        self._backends: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="figway-live-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def follow(self, job_run_id: str, *, after_id: int) -> Follower:
        """Start delivering the run's transitions after ``after_id`` to a new follower."""
        follower = Follower(job_run_id, after_id, asyncio.get_running_loop(), self.buffer)
        with self._lock:
            self._followers.setdefault(job_run_id, set()).add(follower)
        self._wake.set()  # catch up at once with what happened since its snapshot
        return follower

    def unfollow(self, follower: Follower) -> None:
        with self._lock:
            followers = self._followers.get(follower.job_run_id)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[follower.job_run_id]
                    self._backends.pop(follower.job_run_id, None)

    def wake(self) -> None:
        """Something was written: read now rather than at the next poll."""
        self._wake.set()

    def followed(self) -> int:
        with self._lock:
            return sum(len(followers) for followers in self._followers.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.read_once()
            except FigwayError as exc:  # the database is away: the next round tries again
                log.warning("live feed: cannot read the journal: %s", exc)
            except Exception:  # a bug must not end live updates for every client
                log.exception("live feed: a round failed")

    def read_once(self) -> int:
        """Deliver what was written since each follower's last message; returns how many."""
        with self._lock:
            followed = {run: set(followers) for run, followers in self._followers.items()}
        unknown = [run for run in followed if run not in self._backends]
        if unknown:
            self._backends.update(self.journal.backends(job_run_ids=unknown))
        delivered = 0
        for job_run_id, followers in followed.items():
            after = min(follower.after_id for follower in followers)
            entries = self.journal.since(job_run_id=job_run_id, after_id=after)
            backend = self._backends.get(job_run_id, "")
            for entry in entries:
                message = message_of(entry, backend)
                for follower in followers:
                    if entry.id > follower.after_id:
                        follower.after_id = entry.id
                        follower.loop.call_soon_threadsafe(follower._put, message)
                        delivered += 1
        return delivered
