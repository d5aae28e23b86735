"""Transactions for the classes that hold figway's SQL, and the one dialect-specific insert."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backends.model.errors import StoreError, StoreUnavailableError

__all__ = [
    "Transactions",
    "autocommit",
    "dialect_insert",
    "insert_ignoring_conflicts",
    "is_disconnect",
    "utcnow",
]


class Transactions:
    """Base of the classes that hold figway's SQL: each public method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            if is_disconnect(exc):
                raise StoreUnavailableError(f"database unreachable: {exc.orig}") from exc
            raise StoreError(f"database error: {exc.orig}") from exc


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for self-contained statements, each its own transaction.

    PostgreSQL's one-statement writes (:mod:`backends.store.node_transition_call`,
    :mod:`backends.store.submission_statements`) run here: no BEGIN and COMMIT
    round trips around them. Errors are translated as :meth:`Transactions._transaction`
    does; a statement's own ``RAISE`` (SQLSTATE P0002, no such row) is a StoreError
    with its message.
    """
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection
    except OperationalError as exc:
        if is_disconnect(exc):
            raise StoreUnavailableError(f"database unreachable: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _NO_DATA_FOUND:
            diag = getattr(exc.orig, "diag", None)
            raise StoreError(str(getattr(diag, "message_primary", None) or exc.orig)) from exc
        raise StoreError(f"database error: {exc.orig}") from exc


#: The SQLSTATE figway's functions raise for a run or node that does not exist.
_NO_DATA_FOUND = "P0002"

#: SQLSTATEs of a server that is going away or not accepting connections yet:
#: class 08 (connection exception), admin/crash shutdown, cannot connect now.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


def is_disconnect(exc: OperationalError) -> bool:
    """Whether the error means the database cannot be reached (as opposed to a refused statement).

    A connection that could not be made carries no SQLSTATE; one that broke is
    marked invalidated by SQLAlchemy.
    """
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if state is None:
        return "sqlite" not in type(exc.orig).__module__  # SQLite's errors carry none
    return bool(state.startswith(_UNAVAILABLE_STATES))


def dialect_insert(session: Session, model: type[Any]) -> Any:
    """The session's dialect's ``INSERT``, which has ``ON CONFLICT`` clauses."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise StoreError(f"unsupported database dialect {dialect!r}")  # pragma: no cover


def insert_ignoring_conflicts(session: Session, model: type[Any]) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's dialect."""
    return dialect_insert(session, model).on_conflict_do_nothing()


def utcnow() -> datetime:
    """The time every record is stamped with: aware, in UTC."""
    return datetime.now(UTC)
