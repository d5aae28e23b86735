"""figway's system of record: tables, engines, migrations and the one place SQL lives.

``runs`` is the state machine of runs and nodes (the :class:`Store`), ``views`` what it
hands out, ``plans`` the stored plan documents; each other record kind has a module of
its own (``routing_records``, ``metric_records``, ``comparison_records``,
``artifact_records``, ``api_keys``, ``journal``). May import ``backends.model``; never
``gateway``, an executor or the node runtime.
"""

from __future__ import annotations

from backends.store.database import create_database_engine, ensure_migrated, upgrade
from backends.store.runs import Store
from backends.store.transactions import utcnow
from backends.store.views import LogRecord, NodeOutcome, NodeView, RunView, StaleNode

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
