"""What every ``figway`` subcommand shares: settings, errors as messages, logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import click

from backends.errors import FigwayError
from gateway.config import Settings, get_settings

__all__ = ["configure_logging", "or_exit", "settings_or_exit"]

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
