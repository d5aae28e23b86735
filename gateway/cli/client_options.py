"""The options of commands that talk to a running gateway as a client does: where it is
and which key to send. Light on purpose: such commands need none of figway's stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

__all__ = ["gateway_client_options"]

F = TypeVar("F", bound=Callable[..., object])


def gateway_client_options(scope: str) -> Callable[[F], F]:
    """``--url`` (or FIGWAY_URL) and ``--key`` (or FIGWAY_API_KEY, holding ``scope``)."""

    def decorate(command: F) -> F:
        command = click.option(
            "--key",
            envvar="FIGWAY_API_KEY",
            default=None,
            help=f"An API key with the {scope} scope (or FIGWAY_API_KEY); not needed on the "
            "embedded default.",
        )(command)
        return click.option(
            "--url",
            envvar="FIGWAY_URL",
            default="http://127.0.0.1:8000",
            show_default=True,
            help="The gateway's API address (or FIGWAY_URL).",
        )(command)

    return decorate
