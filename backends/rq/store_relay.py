"""A forked work horse records its node through its worker's database connection.

RQ's forking worker runs every job in a freshly forked work horse, and a fork
cannot share its parent's database sockets. Connecting again cost every job
8-15 ms on loopback, and a new server backend starts cold: statement plans and
``figway_node_transition``'s compiled body live per connection. So the horse
does not connect. Before each fork the worker opens a socket pair; the horse
sends the node runtime's store calls (the start, the outcome, heartbeats and
log lines) over it, and a thread of the worker makes them on its own warm
connection pool and sends back the answer or the error.

The relay carries pickles. Both ends are the same program, one process forked
from the other, and nobody else can reach an unnamed socket pair (unlike Redis,
where jobs travel as JSON: :mod:`backends.rq.serialization`).

A horse never waits on a worker that is gone: when the relay breaks, the horse
makes the call on its own connection instead. Every store call is once-only,
so a call the worker made just before it died is refused, not doubled.
"""

from __future__ import annotations

import logging
import pickle
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from backends.model.errors import FigwayError, StoreError, StoreUnavailableError
from backends.model.status import NodeStatus
from backends.store import LogRecord, NodeOutcome, Store
from backends.store.views import AttemptStart

__all__ = ["RelayedStore", "StoreRelay"]

log = logging.getLogger(__name__)

#: The store methods a horse sends to its worker; everything else it calls directly.
RELAYED = frozenset({"start_attempt", "record_node", "heartbeat", "append_logs"})
_LENGTH = struct.Struct("!I")


class StoreRelay:
    """The worker's side: one socket pair per horse, served by a thread of the worker."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._worker_end, self._horse_end = socket.socketpair()

    def in_horse(self, direct: Store) -> RelayedStore:
        """In the forked horse: the store its node runtime should use."""
        self._worker_end.close()
        return RelayedStore(self._horse_end, direct)

    def in_worker(self) -> None:
        """In the worker, after the fork: serve the horse until it exits."""
        self._horse_end.close()
        threading.Thread(target=self._serve, name="figway-store-relay", daemon=True).start()

    def close(self) -> None:
        """In the worker, when there is no horse to serve (the fork failed)."""
        self._worker_end.close()
        self._horse_end.close()

    def _serve(self) -> None:
        with self._worker_end as connection:
            while True:
                try:
                    method, kwargs = _receive(connection)
                except (EOFError, OSError):
                    return  # the horse exited
                try:
                    if method not in RELAYED:
                        raise StoreError(f"the store relay does not carry {method!r}")
                    answer: tuple[bool, Any] = (True, getattr(self.store, method)(**kwargs))
                except StoreUnavailableError as exc:
                    answer = (False, (True, str(exc)))
                except FigwayError as exc:
                    answer = (False, (False, str(exc)))
                except Exception as exc:  # the horse must hear of it, not hang
                    log.exception("store call %s for a work horse failed", method)
                    answer = (False, (False, f"{method} failed in the worker: {exc}"))
                try:
                    _send(connection, answer)
                except OSError:
                    return


class RelayedStore(Store):
    """The horse's side: the node runtime's store calls go to the worker."""

    def __init__(self, connection: socket.socket, direct: Store) -> None:
        super().__init__(direct.engine)
        self._connection: socket.socket | None = connection
        self._lock = threading.Lock()  # the heartbeat thread and the node share the relay

    def start_attempt(self, *, job_run_id: str, node_id: str, attempt: int) -> AttemptStart:
        answer: AttemptStart = self._call(
            "start_attempt", job_run_id=job_run_id, node_id=node_id, attempt=attempt
        )
        return answer

    def record_node(
        self,
        *,
        job_run_id: str,
        node_id: str,
        attempt: int,
        status: NodeStatus,
        error: str | None = None,
        output: Any = None,
        logs: Sequence[LogRecord] = (),
    ) -> NodeOutcome:
        answer: NodeOutcome = self._call(
            "record_node",
            job_run_id=job_run_id,
            node_id=node_id,
            attempt=attempt,
            status=status,
            error=error,
            output=output,
            logs=list(logs),
        )
        return answer

    def heartbeat(self, *, job_run_id: str, node_id: str, attempt: int) -> bool:
        alive: bool = self._call(
            "heartbeat", job_run_id=job_run_id, node_id=node_id, attempt=attempt
        )
        return alive

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        self._call("append_logs", records=list(records))

    def _call(self, method: str, **kwargs: Any) -> Any:
        with self._lock:
            if self._connection is not None:
                try:
                    _send(self._connection, (method, kwargs))
                    done, value = _receive(self._connection)
                except (EOFError, OSError):
                    log.warning("the worker stopped answering; recording %s directly", method)
                    self._connection.close()
                    self._connection = None
                else:
                    if done:
                        return value
                    unavailable, message = value
                    raise (StoreUnavailableError if unavailable else StoreError)(message)
        return getattr(super(), method)(**kwargs)


def _send(connection: socket.socket, message: object) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    connection.sendall(_LENGTH.pack(len(body)) + body)


def _receive(connection: socket.socket) -> Any:
    (length,) = _LENGTH.unpack(_read_exactly(connection, _LENGTH.size))
    return pickle.loads(_read_exactly(connection, length))


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise EOFError("the other end of the store relay closed")
        chunks += chunk
    return bytes(chunks)
