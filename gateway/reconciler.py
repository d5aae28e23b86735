"""A background thread that settles what no worker will report: lost nodes, interrupted kills."""

from __future__ import annotations

import logging
import threading

from backends.errors import FigwayError
from gateway.dispatcher import Dispatcher

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, dispatcher: Dispatcher, *, interval_seconds: float) -> None:
        self.dispatcher = dispatcher
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="figway-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.dispatcher.reconcile_once()
            except FigwayError as exc:  # the database or a backend is down: try next round
                log.warning("reconcile round failed: %s", exc)
            except Exception:
                log.exception("reconcile round failed unexpectedly")
