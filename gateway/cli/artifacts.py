"""``figway artifacts``: where node outputs are stored, and removing expired ones now."""

from __future__ import annotations

from datetime import timedelta

import click

from backends.store.artifact_records import ArtifactRecords
from gateway.cli.support import migrated_engine, or_exit, settings_or_exit
from gateway.upkeep.artifact_janitor import ArtifactJanitor

__all__ = ["artifacts"]


@click.group()
def artifacts() -> None:
    """Node outputs (Parquet tables) in the artifact store."""


@artifacts.command("where")
def where() -> None:
    """Print the artifact store's location (FIGWAY_ARTIFACT_URL, else FIGWAY_DATA_DIR/artifacts)."""
    settings = settings_or_exit()
    click.echo(settings.artifact_store().url)


@artifacts.command("purge")
@click.option(
    "--older-than-hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Remove the outputs of runs finished longer ago than this "
    "[default: FIGWAY_ARTIFACT_RETENTION_HOURS, 168].",
)
def purge(older_than_hours: float | None) -> None:
    """Remove the node outputs of finished runs now (the gateway also does it on its own)."""
    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        janitor = ArtifactJanitor(
            ArtifactRecords(engine),
            settings.artifact_store(),
            retention=timedelta(hours=settings.artifact_retention_hours),
        )
        retention = None if older_than_hours is None else timedelta(hours=older_than_hours)
        report = or_exit(lambda: janitor.purge_expired(retention=retention))
    finally:
        engine.dispose()
    click.echo(f"removed {report.files} files of {report.runs} finished runs")
