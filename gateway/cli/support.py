"""What every ``figway`` subcommand shares: settings, errors as messages, logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy import Engine

from backends.model.errors import FigwayError
from backends.store import create_database_engine, ensure_migrated
from gateway.config import Settings, get_settings

__all__ = ["configure_logging", "migrated_engine", "or_exit", "settings_or_exit"]

T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        raise click.ClickException(f"invalid FIGWAY_* setting: {exc}") from exc


def or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except FigwayError as exc:
        raise click.ClickException(str(exc)) from exc


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def migrated_engine(settings: Settings) -> Engine:
    """The configured database, migrated if it is the embedded one; a message if it is
    out of date or unreachable, naming what to run."""
    engine = create_database_engine(settings.resolved_database_url())
    or_exit(lambda: ensure_migrated(engine, auto_migrate=settings.should_auto_migrate()))
    return engine
