"""The ``figway`` command: its group and help; each command group lives in a module of its own.

The groups are imported when they are called, not when ``figway`` starts: a command
pays only for what it uses (``figway runs watch`` needs neither Prefect nor the
database).
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

#: Each command, and the module that holds it (as an attribute of the same name).
COMMANDS: dict[str, str] = {
    "serve": "gateway.cli.serve",
    "worker": "gateway.cli.worker",
    "setup": "gateway.cli.setup",
    "db": "gateway.cli.db",
    "workflows": "gateway.cli.workflows",
    "rules": "gateway.cli.rules",
    "compare": "gateway.cli.compare",
    "artifacts": "gateway.cli.artifacts",
    "keys": "gateway.cli.keys",
    "runs": "gateway.cli.runs",
    "status": "gateway.cli.status",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command: click.Command = getattr(importlib.import_module(COMMANDS[cmd_name]), cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="figway")
def main() -> None:
    """figway: the workflow_runs API, routed run by run to Redis RQ or Prefect 3.

    With no FIGWAY_* settings, figway runs on its embedded default: SQLite
    under ./.figway and in-process RQ workers. Set FIGWAY_DATABASE_URL and
    FIGWAY_REDIS_URL for production.
    """
