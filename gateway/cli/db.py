"""``figway db``: the database schema."""

from __future__ import annotations

import click

from backends.store import create_database_engine, upgrade
from backends.store.roles import grant_worker_role
from gateway.cli.support import or_exit, settings_or_exit

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version of figway (safe to repeat)."""
    settings = settings_or_exit()
    engine = create_database_engine(settings.resolved_database_url())
    or_exit(lambda: upgrade(engine))
    click.echo("database is up to date")


@db.command("grant-worker")
@click.argument("role")
def db_grant_worker(role: str) -> None:
    """Give an existing PostgreSQL ROLE exactly what workers need (safe to repeat).

    Workers then read runs and record attempts, transitions and log lines, and cannot
    write API keys, routing records or workflow definitions. Give workers a URL with
    that role in FIGWAY_WORKER_DATABASE_URL, and run this again after `figway db upgrade`.
    """
    settings = settings_or_exit()
    engine = create_database_engine(settings.resolved_database_url())
    try:
        statements = or_exit(lambda: grant_worker_role(engine, role))
    finally:
        engine.dispose()
    for statement in statements:
        click.echo(statement)
    click.echo(f"role {role} may now run figway workers, and do nothing more")
