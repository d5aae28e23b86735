"""``figway db``: the database schema."""

from __future__ import annotations

import click

from backends.store import create_database_engine, upgrade
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
