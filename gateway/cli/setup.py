"""``figway setup``: prepare a backend's server for figway (work pools, deployments, secrets)."""

from __future__ import annotations

import click

from backends.runtime.secrets import names_in_environment
from gateway.cli.support import settings_or_exit

__all__ = ["setup"]


@click.group()
def setup() -> None:
    """Prepare a backend's server for figway."""


@setup.command("prefect")
@click.option(
    "--secrets-from-env",
    is_flag=True,
    help="Also store every FIGWAY_SECRET_<NAME> variable of this shell as the Prefect "
    "Secret block figway-<name>, where nodes running on Prefect find them.",
)
def setup_prefect(secrets_from_env: bool) -> None:
    """Create figway's work pools and deployments on the Prefect server (safe to repeat).

    Pools: default-worker-pool (10 flow runs at once), postgres-worker-pool (5) and
    priority-worker-pool (3), all of type process. Then start Prefect's own workers,
    with FIGWAY_DATABASE_URL set: `prefect worker start --pool default-worker-pool`.
    """
    settings = settings_or_exit()
    if settings.prefect_api_url is None:
        raise click.ClickException(
            "PREFECT_API_URL is not set: the embedded default runs Prefect flows in-process "
            "and needs no setup. Point PREFECT_API_URL at your Prefect server (for example "
            "http://127.0.0.1:4200/api) and run this again."
        )
    from prefect.client.orchestration import get_client

    from backends.prefect.setup import ensure_prefect_setup

    secrets = names_in_environment() if secrets_from_env else {}
    if secrets_from_env and not secrets:
        raise click.ClickException(
            "--secrets-from-env found no FIGWAY_SECRET_<NAME> variable in this shell; "
            "export the secrets to store (e.g. FIGWAY_SECRET_PG_SALES=postgresql://…) first"
        )
    try:
        with get_client(sync_client=True) as client:
            changes = ensure_prefect_setup(client)
        if secrets:
            from backends.prefect.secrets import store_secret_blocks

            changes += store_secret_blocks(secrets)
    except Exception as exc:
        raise click.ClickException(
            f"cannot set up Prefect at {settings.prefect_api_url}: {exc}"
        ) from exc
    for change in changes:
        click.echo(str(change))
