"""figway's system of record: tables, engines, migrations and the one place SQL lives."""

from __future__ import annotations

from backends.store.database import create_database_engine, ensure_migrated, upgrade
from backends.store.runs import (
    LogRecord,
    NodeOutcome,
    NodeView,
    RunView,
    StaleNode,
    Store,
    utcnow,
)

__all__ = [
    "LogRecord",
    "NodeOutcome",
    "NodeView",
    "RunView",
    "StaleNode",
    "Store",
    "create_database_engine",
    "ensure_migrated",
    "upgrade",
    "utcnow",
]
