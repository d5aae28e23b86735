"""``figway serve``: the HTTP API and the legacy WebSocket port, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from backends.model.errors import FigwayError
from backends.store.routing_records import RoutingRecords
from gateway.cli.support import configure_logging, migrated_engine, or_exit, settings_or_exit
from gateway.routing.source import RulesSource
from gateway.web.access_log import ACCESS_LOGGER
from gateway.web.exposure import is_loopback, security_lines

__all__ = ["serve"]

log = logging.getLogger(__name__)


@click.command()
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
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve https and wss on both ports with this certificate (PEM, chain included); "
    "with --ssl-keyfile. Unset: plain http, for a reverse proxy that terminates TLS.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's private key (PEM).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve on a non-loopback interface with access control off, on purpose: anyone "
    "who reaches the port can define and run workflows.",
)
def serve(
    host: str,
    port: int,
    ws_port: int,
    log_level: str,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    insecure_no_auth: bool,
) -> None:
    """Serve the HTTP API (Ctrl-C or SIGTERM stops it cleanly)."""
    import uvicorn

    from gateway.web.app import create_app
    from gateway.web.routes.live import create_legacy_app

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    tls = {} if ssl_certfile is None else {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    scheme, ws_scheme = ("https", "wss") if tls else ("http", "ws")
    settings = settings_or_exit()
    configure_logging(log_level)
    access = settings.access()
    if not access.required and not is_loopback(host):
        explicitly_off = os.environ.get("FIGWAY_AUTH", "").lower() == "off"
        if not (insecure_no_auth or explicitly_off):
            raise click.ClickException(
                f"refusing to serve on {host} with access control off ({access.reason}): "
                "anyone who reaches it could define and run workflows. Turn API keys on "
                "(FIGWAY_AUTH=on, then `figway keys create`), serve on 127.0.0.1, or say it "
                "on purpose with --insecure-no-auth (or FIGWAY_AUTH=off in the environment)"
            )
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
    click.echo(f"figway API on {scheme}://{host}:{port}  ({mode})")
    click.echo(f"console:    {scheme}://{host}:{port}/  (API docs: /docs)")
    document = rules.document
    click.echo(
        f"routing:    rules version {document.version}, phase {document.rules.phase}, "
        f"{len(document.rules.rules)} rule(s), default {document.rules.default} "
        f"(from {document.source})"
    )
    click.echo(
        f"live:       {ws_scheme}://{host}:{ws_port}/{{job_run_id}} and /ws/workflow_runs/{{id}}"
    )
    if settings.prefect_api_url is None and settings.prefect_early_start:
        click.echo(
            "prefect:    in-process flows; Prefect's temporary API is starting in the background "
            "(about 20 s on a fresh data directory; GET /readyz shows it, and a run sent to "
            "Prefect meanwhile says what it waits for)"
        )
    for line in security_lines(settings):
        click.echo(f"security:   {line}")
        log.info("security: %s", line)
    if not access.required and (settings.production_backing or not is_loopback(host)):
        # Off with a database or Redis is production opened on purpose: said at every start.
        log.warning(
            "access control is OFF on %s (%s): anyone who reaches it can run workflows",
            host,
            access.reason,
        )
    # figway's own access log (gateway/web/access_log.py), at the level asked for here:
    # Prefect's logging set-up cannot lower it, as it lowers uvicorn's.
    logging.getLogger(ACCESS_LOGGER).setLevel(log_level.upper())
    api = create_app(settings, owns_process=True)
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="on",
            access_log=False,
            **tls,  # type: ignore[arg-type]
        )
    )
    # The legacy WebSocket port serves from the API's services: it has no lifespan of
    # its own, and starts once the API's has built them.
    legacy = uvicorn.Server(
        uvicorn.Config(
            create_legacy_app(api),
            host=host,
            port=ws_port,
            log_level=log_level,
            lifespan="off",
            access_log=False,
            **tls,  # type: ignore[arg-type]
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
