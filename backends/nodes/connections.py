"""Database connections for node types: URLs, a pool per worker process, and errors people read.

A connection is a URL (``postgresql://user@host:5432/db``, ``mysql://…``),
written in the definition or, when it carries a password, kept in a secret
(``connection: secret:pg-sales``) and resolved on the worker. A URL with a
password in the definition is refused: the definition is stored in figway's
database and shown by its API.

Connections are pooled per worker process and per URL: a node takes one,
returns it when it succeeds, and closes it when anything failed (a connection
that saw an error is never handed to the next node). An idle connection is
checked with one round trip before it is handed out, so one the server closed
meanwhile (a restart, an idle timeout) is replaced instead of failing a node. A forked RQ work horse
starts with no pool: sockets inherited across a fork must not be shared.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, ValidationInfo, field_validator

from backends.model.errors import NodeFailedError
from backends.nodes.base import Admission, NodeConfig
from backends.nodes.policy import NodePolicy
from backends.runtime.secrets import checked_secret_name

__all__ = [
    "SAFE_OPTIONS",
    "ConnectionConfig",
    "ConnectionPool",
    "DatabaseUrl",
    "check_connection_setting",
    "close_all_pools",
    "in_forked_child",
    "pool_for",
    "refuse_unsafe_options",
    "unsafe_options",
]

C = TypeVar("C")

#: Idle connections kept per URL and process; more are opened (and closed) as needed.
MAX_IDLE = 4

#: Query-string options a connection URL may carry. Others could point the connection
#: elsewhere than its host (``host``, ``hostaddr``, ``service``), read the worker's files
#: (``passfile``, ``sslkey``, ``sslcert``) or change the server session (``options``).
SAFE_OPTIONS = frozenset(
    {
        "application_name", "channel_binding", "charset", "client_encoding",
        "connect_timeout", "gssencmode", "keepalives", "keepalives_count",
        "keepalives_idle", "keepalives_interval", "ssl_min_protocol_version", "sslmode",
        "sslrootcert", "target_session_attrs", "tcp_user_timeout",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DatabaseUrl:
    """A connection URL taken apart; :meth:`describe` is safe to print."""

    scheme: str
    host: str
    port: int | None
    user: str | None
    password: str | None
    database: str | None
    options: dict[str, str]

    @classmethod
    def parse(cls, text: str, *, schemes: tuple[str, ...]) -> DatabaseUrl:
        """Raises ValueError naming what is wrong (never quoting the password).

        >>> DatabaseUrl.parse("postgresql://etl:pw@db:5433/sales", schemes=("postgresql",)).describe()
        'postgresql://etl@db:5433/sales'
        """
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ValueError("not a valid connection URL") from None
        scheme = parts.scheme.split("+", 1)[0]
        if scheme not in schemes:
            raise ValueError(
                f"the URL scheme must be {' or '.join(s + '://' for s in schemes)}, "
                f"not {parts.scheme + '://' if parts.scheme else 'missing'}"
            )
        if not parts.hostname:
            raise ValueError("the URL names no host")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=parts.path.lstrip("/") or None,
            options=options,
        )

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{self.host}{port}/{self.database or ''}"


def unsafe_options(url: DatabaseUrl) -> list[str]:
    """The URL's options outside :data:`SAFE_OPTIONS`, sorted.

    >>> unsafe_options(DatabaseUrl.parse("postgresql://h/db?sslmode=require&passfile=/x&host=y",
    ...     schemes=("postgresql",)))
    ['host', 'passfile']
    """
    return sorted(set(url.options) - SAFE_OPTIONS - {"password"})


def check_connection_setting(
    value: str, *, schemes: tuple[str, ...], policy: NodePolicy | None = None
) -> str:
    """The check every ``connection`` field makes when a workflow is defined (and again,
    with the worker's policy, before a node connects).

    >>> check_connection_setting("secret:pg-sales", schemes=("postgresql",))
    'secret:pg-sales'
    """
    if checked_secret_name(value) is not None:
        return value
    url = DatabaseUrl.parse(value, schemes=schemes)
    if url.password is not None or "password" in url.options:
        raise ValueError(
            "the URL holds a password, and definitions are stored and shown in clear: "
            "keep the URL in a secret (connection: secret:NAME, with FIGWAY_SECRET_NAME "
            "set on the workers)"
        )
    unsafe = unsafe_options(url)
    if unsafe:
        raise ValueError(
            f"the URL's option(s) {', '.join(unsafe)} are not allowed; a connection URL may "
            f"carry only {', '.join(sorted(SAFE_OPTIONS))}"
        )
    if policy is not None and not policy.db_host_allowed(url.host):
        raise ValueError(
            f"host {url.host!r} may not be named in a definition here: use a secret "
            "(connection: secret:NAME, which the operator controls), or an operator can "
            "list the host in FIGWAY_DB_ALLOW"
        )
    return value


def refuse_unsafe_options(url: DatabaseUrl) -> None:
    """Fail the node when a URL (a resolved secret, or a definition stored before this
    check existed) carries options outside :data:`SAFE_OPTIONS`."""
    unsafe = unsafe_options(url)
    if unsafe:
        raise NodeFailedError(
            f"the connection to {url.describe()} carries option(s) {', '.join(unsafe)}, "
            "which nodes may not use"
        )


class ConnectionConfig(NodeConfig):
    """The fields of every node that talks to a database; subclasses name their URL schemes."""

    SCHEMES: ClassVar[tuple[str, ...]] = ()

    connection: str = Field(
        max_length=4_096,
        description="The database's URL without a password (postgresql://…, mysql://…), or "
        "secret:NAME holding the URL.",
    )
    connect_timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="Give up connecting after this long."
    )

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: str, info: ValidationInfo) -> str:
        admission = Admission.of(info)
        admission.check_secret(value, use="connection")
        return check_connection_setting(value, schemes=cls.SCHEMES, policy=admission.policy)


class ConnectionPool(Generic[C]):
    """Idle connections to one database, reused by the nodes of one process."""

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        close: Callable[[C], None],
        alive: Callable[[C], bool],
        max_idle: int = MAX_IDLE,
    ) -> None:
        self._connect = connect
        self._close = close
        self._alive = alive
        self._max_idle = max_idle
        self._idle: list[C] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[C]:
        """A connection for one node; closed instead of kept if the block raises."""
        connection = self._take()
        try:
            yield connection
        except BaseException:
            self._discard(connection)
            raise
        self._give_back(connection)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)

    def _take(self) -> C:
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection = self._idle.pop()
            if self._alive(connection):
                return connection
            self._discard(connection)
        return self._connect()

    def _give_back(self, connection: C) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        self._discard(connection)

    def _discard(self, connection: C) -> None:
        # Closing a broken connection may fail too; it is gone either way.
        with contextlib.suppress(Exception):
            self._close(connection)


_pools: dict[tuple[object, ...], ConnectionPool[object]] = {}
_pools_pid = os.getpid()
#: The process that imported this module: a worker whose forks (RQ's work horses) run nodes.
_imported_pid = os.getpid()


def in_forked_child() -> bool:
    """True in a process forked after figway's nodes were imported (an RQ work horse)."""
    return os.getpid() != _imported_pid


_pools_lock = threading.Lock()


def close_all_pools() -> None:
    """Close every idle connection this process holds (at exit, and between tests)."""
    with _pools_lock:
        pools = list(_pools.values()) if os.getpid() == _pools_pid else []
        _pools.clear()
    for pool in pools:
        pool.close_all()


atexit.register(close_all_pools)


def pool_for(
    kind: str, url: str, make: Callable[[], ConnectionPool[C]], *options: object
) -> ConnectionPool[C]:
    """This process's pool for ``url`` and connection ``options`` (made by ``make`` on first
    use): nodes asking for other timeouts get connections opened with theirs."""
    global _pools_pid
    with _pools_lock:
        if os.getpid() != _pools_pid:
            # A forked child: the parent's connections are the parent's. Forget, never close.
            _pools.clear()
            _pools_pid = os.getpid()
        key = (kind, url, *options)
        pool = _pools.get(key)
        if pool is None:
            pool = make()  # type: ignore[assignment]
            _pools[key] = pool  # type: ignore[assignment]
        return pool  # type: ignore[return-value]
