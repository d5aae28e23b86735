"""Background threads that run one task every few seconds: reconciling, reloading rules,
checking guards, comparing shadows.

A round that fails is logged and the next round tries again: a database or
backend that is down for a while must not stop the gateway's housekeeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from backends.model.errors import FigwayError

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, task: Callable[[], object], *, interval_seconds: float) -> None:
        self.name = name
        self.task = task
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"figway-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.task()
            except FigwayError as exc:  # the database or a backend is down: try next round
                log.warning("%s round failed: %s", self.name, exc)
            except Exception:
                log.exception("%s round failed unexpectedly", self.name)
