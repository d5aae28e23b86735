"""``figway keys``: create, list and revoke the API keys clients send."""

from __future__ import annotations

import click

from backends.store.api_keys import SCOPES, ApiKeys
from gateway.cli.support import migrated_engine, settings_or_exit

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """API keys: what clients send as `Authorization: Bearer <key>` (docs/access.md)."""


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for (shown in lists).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="runs: workflow_runs and live status; workflows: definitions; code: python "
    "nodes; admin: routing rules and guards; metrics: /metrics only. Repeat for several.",
)
@click.option(
    "--workspace",
    "workspaces",
    multiple=True,
    help="Limit the key to this workspace's runs and workflows (repeat for several); "
    "others answer 404 as if they did not exist. Unset: every workspace.",
)
def create(name: str, scopes: tuple[str, ...], workspaces: tuple[str, ...]) -> None:
    """Create a key and print it: it is shown this once, and stored only as a hash."""
    engine = migrated_engine(settings_or_exit())
    try:
        new = ApiKeys(engine).create(
            name=name, scopes=scopes, created_by="cli", workspaces=workspaces
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(new.token)
    reach = ", ".join(sorted(new.key.workspaces)) if new.key.workspaces else "every workspace"
    click.echo(
        f"key {new.key.key_id} ({name}; scopes: {', '.join(sorted(new.key.scopes))}; "
        f"workspaces: {reach}). Store it now: figway keeps only its hash.",
        err=True,
    )


@keys.command("list")
def list_keys() -> None:
    """Every key: id, name, scopes, created, revoked (never the secret)."""
    engine = migrated_engine(settings_or_exit())
    try:
        found = ApiKeys(engine).all()
    finally:
        engine.dispose()
    if not found:
        click.echo("no keys; create one with `figway keys create --name NAME --scope runs`")
        return
    for key in found:
        state = (
            f"revoked {key.revoked_at:%Y-%m-%d %H:%M} by {key.revoked_by}"
            if key.revoked_at
            else "in force"
        )
        reach = ",".join(sorted(key.workspaces)) if key.workspaces else "*"
        click.echo(
            f"{key.key_id}  {key.name:<24} {','.join(sorted(key.scopes)):<22} "
            f"workspaces {reach:<16} "
            f"created {key.created_at:%Y-%m-%d %H:%M} by {key.created_by}  {state}"
        )


@keys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke a key on every gateway: refused within FIGWAY_KEY_CACHE_SECONDS (5 s at most)."""
    engine = migrated_engine(settings_or_exit())
    try:
        revoked = ApiKeys(engine).revoke(key_id=key_id, revoked_by="cli")
    finally:
        engine.dispose()
    if not revoked:
        raise click.ClickException(
            f"no key {key_id!r} in force (see `figway keys list`); nothing revoked"
        )
    click.echo(f"key {key_id} revoked")
