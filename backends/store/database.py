"""Engines for SQLite and PostgreSQL, and the schema's migration state.

SQLite is the embedded default: every transaction starts with ``BEGIN
IMMEDIATE`` so writers queue instead of failing with "database is locked",
and WAL lets readers proceed beside them. PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError

from backends.model.errors import DatabaseNotMigratedError, StoreUnavailableError
from backends.private_files import private_file

__all__ = [
    "alembic_config",
    "create_database_engine",
    "ensure_migrated",
    "normalise_url",
    "schema_is_current",
    "upgrade",
]

_MIGRATIONS_CANDIDATES = (
    Path(__file__).resolve().parent / "migrations",  # installed wheel
    Path(__file__).resolve().parents[2] / "migrations",  # source checkout
)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names.

    >>> normalise_url("postgresql://u@h/db")
    'postgresql+psycopg://u@h/db'
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_database_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url``, tuned for figway's many short transactions."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    engine = create_engine(url, pool_size=pool_size, max_overflow=20)
    _ping_after_idling(engine)
    # A forked RQ work horse must not share its parent's sockets.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


#: A pooled connection unused for longer than this is checked before it is handed out.
IDLE_PING_SECONDS = 2.0


def _ping_after_idling(engine: Engine) -> None:
    """Check a pooled connection only when it has been idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip before each
    of a node's transitions and each statement of a submission. A connection handed
    back moments ago was working moments ago; one that idled (across a database
    restart, say) is pinged, and replaced when the ping fails. A connection that
    breaks in between fails its statement as unreachable, the pool is refreshed, and
    the caller's retry (a transition waits for the database; a request answers 503)
    gets a new one.
    """

    @event.listens_for(engine, "checkin")
    def _note_idle(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return  # new, or just handed back
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("a pooled connection failed its ping")


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        private_file(Path(database))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(engine: Engine) -> Config:
    location = next((p for p in _MIGRATIONS_CANDIDATES if (p / "env.py").exists()), None)
    if location is None:
        raise FileNotFoundError("figway's migrations folder is missing from this install")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (``figway db upgrade``)."""
    command.upgrade(alembic_config(engine), "head")


def schema_is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current == head


def ensure_migrated(engine: Engine, *, auto_migrate: bool) -> None:
    """Migrate (embedded default) or refuse to go on with an outdated schema (production).

    An unreachable database is a :class:`StoreUnavailableError` naming it, not a driver
    traceback.
    """
    try:
        current = schema_is_current(engine)
    except OperationalError as exc:
        where = make_url(engine.url).render_as_string(hide_password=True)
        raise StoreUnavailableError(f"cannot reach the database at {where}: {exc.orig}") from exc
    if current:
        return
    if auto_migrate:
        upgrade(engine)
        return
    raise DatabaseNotMigratedError(
        f"the database at {make_url(engine.url).render_as_string(hide_password=True)} is not "
        "migrated to this version of figway: run `figway db upgrade` and start again"
    )
