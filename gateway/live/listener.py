"""PostgreSQL's notifications of new journal rows, waking the live feed at once.

Migration 0005 puts a trigger on ``transitions`` that notifies the channel
``figway_transitions``; PostgreSQL sends it when the writing transaction
commits, to every listening gateway. The listener holds one connection of its
own and reconnects after a failure; meanwhile the feed's polling goes on, so
nothing is lost, only later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

__all__ = ["CHANNEL", "NotificationListener"]

log = logging.getLogger(__name__)

CHANNEL = "figway_transitions"


class NotificationListener:
    def __init__(self, database_url: str, on_notify: Callable[[], None]) -> None:
        # SQLAlchemy's driver prefix is not libpq's.
        self._url = "postgresql://" + database_url.split("://", 1)[1]
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="figway-listen", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    while not self._stop.is_set():
                        # Wake up every second to see whether the gateway is stopping.
                        for _ in connection.notifies(timeout=1.0):
                            self._on_notify()
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("live feed: not listening to PostgreSQL (%s); polling meanwhile", exc)
                self._stop.wait(2.0)
