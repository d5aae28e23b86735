"""One heartbeat thread per process for every node attempt running in it.

An attempt beats while its node runs: it proves its worker alive, flushes the node's
complete log lines, and learns that its run was killed. A thread of its own per attempt
cost a thread start and join on every node (about 2 ms, as much as a noop node's
work); one thread per process, started with the first attempt, beats them all.

A forked process (an RQ work horse) starts its own thread with its first attempt: the
forking process's thread did not come along.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Heartbeats"]

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    beat: Callable[[], None]
    active: bool = True
    #: Held while it beats: an attempt that ends waits for a beat in progress, so
    #: nothing of it is written after its outcome.
    lock: threading.Lock = field(default_factory=threading.Lock)


class Heartbeats:
    """Calls each registered attempt's ``beat`` every ``seconds``, from one thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._attempts: dict[int, _Attempt] = {}
        self._keys = itertools.count()

    @contextmanager
    def beating(self, beat: Callable[[], None]) -> Iterator[None]:
        """``beat()`` is called every ``seconds`` until the block ends (never after)."""
        attempt = _Attempt(beat)
        key = next(self._keys)
        self._start_here()
        with self._lock:
            self._attempts[key] = attempt
        try:
            yield
        finally:
            with self._lock:
                self._attempts.pop(key, None)
            with attempt.lock:
                attempt.active = False

    def _start_here(self) -> None:
        """Start this process's thread, unless it runs already."""
        pid = os.getpid()
        if self._pid == pid:
            return
        # A fresh process: what it inherited (attempts, a lock perhaps held) is the
        # forking process's, whose thread is not here.
        self._lock = threading.Lock()
        self._attempts = {}
        self._pid = pid
        threading.Thread(target=self._run, name="node-heartbeats", daemon=True).start()

    def _run(self) -> None:
        idle = threading.Event()  # never set: a sleep that a fork cannot disturb
        while True:
            idle.wait(self.seconds)
            with self._lock:
                attempts = list(self._attempts.values())
            for attempt in attempts:
                with attempt.lock:
                    if not attempt.active:
                        continue
                    try:
                        attempt.beat()
                    except Exception:  # one attempt's beat must not stop the others'
                        log.exception("a node heartbeat failed")
