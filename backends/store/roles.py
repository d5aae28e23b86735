"""The least-privilege PostgreSQL role for workers.

Workers run the nodes people define, and the code a python node names runs with the
worker's database rights. A worker needs to read runs and their plans and to record
attempts, transitions and log lines; nothing more. With :func:`grant_worker_role`, a
worker's role can do exactly that: it cannot write API keys, routing records, workflow
definitions or the metrics ledger, so a node cannot mint a key or change a route.

Run ``figway db grant-worker ROLE`` once, and again after each ``figway db upgrade``
(a new table is granted to nobody until then), and give workers a URL with that role in
``FIGWAY_WORKER_DATABASE_URL``.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from backends.model.errors import StoreError

__all__ = ["WORKER_GRANTS", "grant_worker_role"]

#: What a worker may do, table by table; every other table is revoked.
WORKER_GRANTS: dict[str, tuple[str, ...]] = {
    "runs": ("SELECT", "UPDATE"),  # UPDATE: the state machine locks the run row and ends it
    "node_runs": ("SELECT", "UPDATE"),
    "transitions": ("SELECT", "INSERT"),
    "log_lines": ("INSERT",),
    "alembic_version": ("SELECT",),  # a worker checks the schema is current, never migrates
}
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_worker_role(engine: Engine, role: str) -> list[str]:
    """Give ``role`` exactly :data:`WORKER_GRANTS` on figway's tables; returns the statements.

    The role must exist (``CREATE ROLE figway_worker LOGIN PASSWORD '…'``): how it logs
    in is the operator's choice. Safe to repeat.
    """
    if engine.dialect.name != "postgresql":
        raise StoreError("a worker role exists only on PostgreSQL; SQLite has no roles")
    if _ROLE.fullmatch(role) is None:
        raise StoreError(f"{role!r} is not a plain role name (lower-case letters, digits and _)")
    statements: list[str] = []
    try:
        with engine.begin() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
            ).first()
            if exists is None:
                raise StoreError(
                    f"there is no role {role!r}: create it first, e.g. "
                    f"CREATE ROLE {role} LOGIN PASSWORD '…'"
                )
            database = connection.execute(text("SELECT current_database()")).scalar_one()
            tables = connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            statements.append(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
            statements.append(f"GRANT USAGE ON SCHEMA public TO {role}")
            for table in sorted(tables):
                statements.append(f'REVOKE ALL ON TABLE "{table}" FROM {role}')
                rights = WORKER_GRANTS.get(table)
                if rights:
                    statements.append(f'GRANT {", ".join(rights)} ON TABLE "{table}" TO {role}')
            # The journal's and the log's ids come from their sequences.
            for table in ("transitions", "log_lines"):
                statements.append(f"GRANT USAGE ON SEQUENCE {table}_id_seq TO {role}")
            for statement in statements:
                connection.execute(text(statement))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot grant the worker role: {exc}") from exc
    return statements
