"""A backend that takes a while to come up, started in the background when the gateway
starts, so that its first run does not pay for it unannounced.

On the embedded default, Prefect's temporary API server starts the first time a flow
needs it: about 20 s on a fresh data directory (it creates and migrates its database),
less later. Started at the gateway's start instead, it is usually up before the first
run arrives; while it is not, ``/readyz``, the start-up banner, the run's view
(``waiting_for``), its logs and its WebSocket snapshot say what the run waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BackendStartup"]

log = logging.getLogger(__name__)


class BackendStartup:
    """Runs ``start`` once on a thread of its own and remembers how it went.

    >>> startup = BackendStartup("prefect", "Prefect's temporary API", lambda: None)
    >>> startup.state
    'not started'
    >>> startup.begin().join()
    >>> startup.state, startup.waiting_for()
    ('ready', None)
    """

    def __init__(
        self,
        backend: str,
        what: str,
        start: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.what = what
        self._start = start
        self._clock = clock
        self._lock = threading.Lock()
        self._began: float | None = None
        self._ended: float | None = None
        self._error: str | None = None

    def begin(self) -> threading.Thread:
        """Start it in the background (once; later calls return a finished thread)."""
        with self._lock:
            first = self._began is None
            if first:
                self._began = self._clock()
        thread = threading.Thread(
            target=self._run if first else (lambda: None),
            name=f"{self.backend}-startup",
            daemon=True,
        )
        thread.start()
        return thread

    def _run(self) -> None:
        log.info("%s: starting %s in the background", self.backend, self.what)
        try:
            self._start()
        except Exception as exc:  # reported by /readyz; the first run retries the start
            self._error = str(exc) or type(exc).__name__
            log.warning("%s: %s did not start: %s", self.backend, self.what, self._error)
        else:
            log.info("%s: %s is up after %.1f s", self.backend, self.what, self.seconds)
        finally:
            self._ended = self._clock()

    @property
    def seconds(self) -> float:
        """How long it has been starting (or took to start)."""
        if self._began is None:
            return 0.0
        return (self._ended if self._ended is not None else self._clock()) - self._began

    @property
    def state(self) -> str:
        """``not started``, ``starting``, ``ready`` or ``failed``."""
        if self._began is None:
            return "not started"
        if self._ended is None:
            return "starting"
        return "failed" if self._error else "ready"

    def waiting_for(self) -> str | None:
        """What a run sent to this backend waits for now, in a sentence; None: nothing."""
        if self.state != "starting":
            return None
        return (
            f"{self.what}, starting for {self.seconds:.0f} s (the first start creates its "
            "database); the run starts as soon as it is up"
        )

    def as_dict(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {
            "state": self.state,
            "seconds": round(self.seconds, 1),
            **({"error": self._error} if self._error else {}),
        }
