"""``figway worker``: backend workers that run nodes and record into figway's database."""

from __future__ import annotations

import gc

import click

from backends.model.workflow import POOLS
from gateway.cli.support import or_exit, settings_or_exit

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
