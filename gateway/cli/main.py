"""The ``figway`` command: its group and help; each command group lives in a module of its own."""

from __future__ import annotations

import click

from gateway.cli.artifacts import artifacts
from gateway.cli.compare import compare
from gateway.cli.db import db
from gateway.cli.keys import keys
from gateway.cli.rules import rules
from gateway.cli.serve import serve
from gateway.cli.setup import setup
from gateway.cli.worker import worker
from gateway.cli.workflows import workflows

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="figway")
def main() -> None:
    """figway: the workflow_runs API, routed run by run to Redis RQ or Prefect 3.

    With no FIGWAY_* settings, figway runs on its embedded default: SQLite
    under ./.figway and in-process RQ workers. Set FIGWAY_DATABASE_URL and
    FIGWAY_REDIS_URL for production.
    """


main.add_command(serve)
main.add_command(worker)
main.add_command(setup)
main.add_command(db)
main.add_command(workflows)
main.add_command(rules)
main.add_command(compare)
main.add_command(artifacts)
main.add_command(keys)
