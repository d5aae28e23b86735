"""``figway worker``: backend workers that run nodes and record into figway's database."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from typing import TYPE_CHECKING

import click

from backends.model.workflow import POOLS
from gateway.cli.support import or_exit, settings_or_exit

if TYPE_CHECKING:
    from backends.runtime.attempts import NodeRuntime

__all__ = ["worker"]


@click.group()
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
    """Start RQ's own worker on figway's queues, recording into figway's database.

    It rides out Redis and database outages (it never exits on a connection error)
    and stops on SIGINT or SIGTERM, after the node it is running.
    """
    from backends.rq.worker import WorkerNameTakenError, build_worker, run_worker, worker_redis
    from backends.runtime.bootstrap import install_runtime

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
    runtime = or_exit(runtime_when_database_answers)
    redis = worker_redis(settings.redis_url)
    # One name for every restart of the work loop: RQ's default differs each time.
    name = name or f"figway-{uuid.uuid4().hex[:12]}"
    click.echo(f"figway RQ worker {name} on queues {', '.join(queues)}")
    # Objects that exist now are never collected in a horse: freezing them keeps the
    # collector from touching (and so copying) the parent's pages after each fork.
    gc.freeze()
    try:
        run_worker(lambda: build_worker(redis, queues, simple=simple, name=name), burst=burst)
    except WorkerNameTakenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        install_runtime(None)
        runtime.store.engine.dispose()


def runtime_when_database_answers() -> NodeRuntime:
    """The node runtime, waiting with backoff while the database cannot be reached.

    A worker started during a database outage (a supervisor restarting it, a host
    booting before the database) waits for it instead of exiting.
    """
    from backends.model.errors import StoreUnavailableError
    from backends.runtime.bootstrap import current_runtime

    wait = 1.0
    while True:
        try:
            return current_runtime()
        except StoreUnavailableError as exc:
            logging.getLogger(__name__).warning("%s; trying again in %.0f s", exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)
