"""The ``figway`` command: serve the gateway, run workers, migrate, load workflows."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from backends.model.errors import DefinitionError, FigwayError
from backends.model.workflow import POOLS, parse_definition
from backends.nodes import default_registry
from backends.runtime.secrets import names_in_environment
from backends.store import Store, create_database_engine, upgrade
from backends.store.routing_records import RoutingRecords
from gateway.cli.artifacts import artifacts
from gateway.cli.compare import compare
from gateway.cli.keys import keys
from gateway.cli.rules import rules
from gateway.cli.support import configure_logging, migrated_engine, or_exit, settings_or_exit
from gateway.routing.source import RulesSource

__all__ = ["main"]

_DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="figway")
def main() -> None:
    """figway: the workflow_runs API, routed run by run to Redis RQ or Prefect 3.

    With no FIGWAY_* settings, figway runs on its embedded default: SQLite
    under ./.figway and in-process RQ workers. Set FIGWAY_DATABASE_URL and
    FIGWAY_REDIS_URL for production.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="HTTP API port.")
@click.option(
    "--ws-port",
    default=8765,
    show_default=True,
    type=int,
    help="Port of the legacy WebSocket endpoint (ws://HOST:PORT/{job_run_id}).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str, port: int, ws_port: int, log_level: str) -> None:
    """Serve the HTTP API (Ctrl-C or SIGTERM stops it cleanly)."""
    import uvicorn

    from gateway.web.app import create_app
    from gateway.web.routes.live import create_legacy_app

    settings = settings_or_exit()
    configure_logging(log_level)
    # Refuse an un-migrated production database here, with the command to run, not in a traceback.
    engine = migrated_engine(settings)
    # The same for routing rules: no good version to serve is a listing of the file's problems.
    rules = or_exit(
        lambda: RulesSource.start(
            records=RoutingRecords(engine),
            configured=settings.routing_rules,
            default_backend=settings.default_backend,
        )
    )
    engine.dispose()
    where = (
        settings.resolved_database_url()
        if settings.database_url
        else str((settings.data_dir / "figway.db").resolve())
    )
    if settings.embedded:
        mode = f"embedded default: SQLite at {where}, {settings.embedded_workers} in-process RQ workers"
    else:
        mode = "production: RQ workers run separately (`figway worker rq`)"
    click.echo(f"figway API on http://{host}:{port}  ({mode})")
    click.echo(f"API docs:   http://{host}:{port}/docs")
    document = rules.document
    click.echo(
        f"routing:    rules version {document.version}, phase {document.rules.phase}, "
        f"{len(document.rules.rules)} rule(s), default {document.rules.default} "
        f"(from {document.source})"
    )
    click.echo(f"live:       ws://{host}:{ws_port}/{{job_run_id}} and /ws/workflow_runs/{{id}}")
    api = create_app(settings, owns_process=True)
    server = uvicorn.Server(
        uvicorn.Config(api, host=host, port=port, log_level=log_level, lifespan="on")
    )
    # The legacy WebSocket port serves from the API's services: it has no lifespan of
    # its own, and starts once the API's has built them.
    legacy = uvicorn.Server(
        uvicorn.Config(
            create_legacy_app(api), host=host, port=ws_port, log_level=log_level, lifespan="off"
        )
    )
    try:
        asyncio.run(_serve_both(server, legacy))
    except FigwayError as exc:
        raise click.ClickException(str(exc)) from exc
    if not server.started:
        sys.exit(1)


async def _serve_both(api: Any, legacy: Any) -> None:
    """The API server, and the legacy WebSocket server once the API is up; both stop together."""
    api_task = asyncio.create_task(api.serve())
    while not api.started and not api_task.done():
        await asyncio.sleep(0.05)
    if api_task.done():
        await api_task  # it failed to start: its error, not a second server
        return
    legacy_task = asyncio.create_task(legacy.serve())
    done, _ = await asyncio.wait({api_task, legacy_task}, return_when=asyncio.FIRST_COMPLETED)
    # Ctrl-C or SIGTERM stops the API (uvicorn's handler); the legacy port goes with it.
    legacy.should_exit = True
    api.should_exit = True
    await asyncio.gather(api_task, legacy_task, return_exceptions=True)
    for task in done:
        task.result()


@main.group()
def worker() -> None:
    """Run backend workers (production; the embedded default runs its own)."""


@worker.command("rq")
@click.option(
    "--queues",
    "-q",
    multiple=True,
    default=POOLS,
    show_default=True,
    help="Queues to take jobs from, most urgent first (repeat the option).",
)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--simple",
    is_flag=True,
    help="Run jobs in the worker process instead of a forked work horse (faster; "
    "a kill then relies on the node stopping itself).",
)
@click.option("--name", default=None, help="Worker name shown by `rq info`.")
def worker_rq(queues: tuple[str, ...], burst: bool, simple: bool, name: str | None) -> None:
    """Start RQ's own worker on figway's queues, recording into figway's database."""
    from redis import Redis

    from backends.rq.worker import build_worker
    from backends.runtime.bootstrap import current_runtime, install_runtime

    settings = settings_or_exit()
    if settings.redis_url is None:
        raise click.ClickException(
            "FIGWAY_REDIS_URL is not set: the embedded default runs its workers inside "
            "`figway serve`. Set FIGWAY_REDIS_URL (and FIGWAY_DATABASE_URL) to run separate workers."
        )
    unknown = [q for q in queues if q not in POOLS]
    if unknown:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)}; use {', '.join(POOLS)}")
    # Only what a worker needs (no gateway services): every work horse is a fork of this process.
    runtime = or_exit(current_runtime)
    rq_worker = build_worker(Redis.from_url(settings.redis_url), queues, simple=simple, name=name)
    click.echo(f"figway RQ worker {rq_worker.name} on queues {', '.join(queues)}")
    # Objects that exist now are never collected in a horse: freezing them keeps the
    # collector from touching (and so copying) the parent's pages after each fork.
    gc.freeze()
    try:
        rq_worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        install_runtime(None)
        runtime.store.engine.dispose()


@main.group()
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


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version of figway (safe to repeat)."""
    settings = settings_or_exit()
    engine = create_database_engine(settings.resolved_database_url())
    or_exit(lambda: upgrade(engine))
    click.echo("database is up to date")


@main.group()
def workflows() -> None:
    """Workflow definitions."""


@workflows.command("load")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="Only validate; store nothing.")
def workflows_load(paths: tuple[Path, ...], check: bool) -> None:
    """Validate and store definitions from YAML/JSON files or folders of them."""
    settings = settings_or_exit()
    files = sorted(_definition_files(paths))
    if not files:
        raise click.ClickException(
            f"no {', '.join(_DEFINITION_SUFFIXES)} files under the given paths"
        )
    store: Store | None = None
    if not check:
        store = Store(migrated_engine(settings))
    node_types = default_registry()
    failures = 0
    for path in files:
        try:
            definition = parse_definition(
                _read_definition(path), node_types=node_types, max_levels=settings.max_levels
            )
        except DefinitionError as exc:
            failures += 1
            click.echo(f"{path}: refused", err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
            continue
        except (OSError, ValueError) as exc:
            failures += 1
            click.echo(f"{path}: cannot read: {exc}", err=True)
            continue
        if store is None:
            click.echo(f"{path}: ok ({definition.workflow_id})")
            continue
        version, created = store.put_workflow(definition=definition)
        state = "created" if created else f"version {version}"
        click.echo(f"{path}: {definition.workflow_id} {state}")
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} definition(s) refused")


def _definition_files(paths: tuple[Path, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in path.rglob("*") if p.suffix in _DEFINITION_SUFFIXES)
        else:
            found.append(path)
    return found


def _read_definition(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("a definition must be a mapping with workflow_id, nodes, dependencies")
    return document


main.add_command(rules)
main.add_command(compare)
main.add_command(artifacts)
main.add_command(keys)
