"""``figway runs``: follow a run from a terminal, through a gateway's live feed."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import click
from rich.console import Console
from rich.live import Live
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from gateway.cli.client_options import gateway_client_options
from gateway.cli.run_watch import EXIT_CODES, WatchedRun, render
from gateway.live.close_codes import CLOSE_UNKNOWN_RUN, WEBSOCKET_CLOSE

__all__ = ["runs"]

#: Exit code when the run could not be followed at all (unknown run, refused key,
#: gateway unreachable): apart from 0, 1 and 2, which say how the run ended.
EXIT_CANNOT_WATCH = 3


class CannotWatchError(click.ClickException):
    exit_code = EXIT_CANNOT_WATCH


@click.group()
def runs() -> None:
    """Runs, as a client sees them through a gateway."""


@runs.command("watch")
@click.argument("job_run_id")
@gateway_client_options("runs")
@click.option(
    "--reconnects",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many times in a row a lost connection is re-opened (each from a fresh "
    "snapshot, so nothing is missed) before giving up.",
)
def watch(job_run_id: str, url: str, key: str | None, reconnects: int) -> None:
    """Follow JOB_RUN_ID live until it ends: a progress bar per level of its DAG and
    each node's state on a terminal, one line per transition otherwise.

    Exits 0 if the run succeeded, 1 if it failed, 2 if it was cancelled, and 3 if it
    could not be followed (unknown run, refused key, gateway unreachable).
    """
    address = live_address(url, job_run_id)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    console = Console()
    run: WatchedRun | None = None
    line: str | None = None
    if console.is_terminal:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            for run, line in follow(address, headers, reconnects):
                if line:
                    live.console.print(line, highlight=False)
                live.update(render(run), refresh=True)
    else:
        for run, line in follow(address, headers, reconnects):
            waiting = f" (waiting for {run.waiting_for})" if run.waiting_for else ""
            click.echo(
                line
                or f"run {run.job_run_id} of {run.workflow_id} on {run.backend}: {run.status}"
                + waiting
            )
    assert run is not None  # follow() yields the snapshot before it can return
    if not console.is_terminal and line is None:  # it had ended before we connected
        click.echo(f"run {run.job_run_id} {run.status}")
    sys.exit(EXIT_CODES[run.status])


def live_address(url: str, job_run_id: str) -> str:
    """The run's WebSocket address on the gateway at ``url`` (http becomes ws, https wss).

    >>> live_address("https://figway.example/api/", "r 1")
    'wss://figway.example/api/ws/workflow_runs/r%201'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise click.BadParameter(f"{url!r} is not an http(s) address", param_hint="--url")
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/ws/workflow_runs/{quote(job_run_id, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def follow(
    address: str, headers: dict[str, str], reconnects: int
) -> Iterator[tuple[WatchedRun, str | None]]:
    """The run after each message (and a line saying what changed, None for the
    snapshot), until it ends. A dropped or too-slow connection is re-opened from a fresh
    snapshot, a few times with a growing pause."""
    failures = 0
    while True:
        try:
            with connect(address, additional_headers=headers, open_timeout=10) as socket:
                run = None
                for run, line in _messages(socket):
                    failures = 0
                    yield run, line
                if run is not None and run.ended:
                    return
                reason = _reconnectable_close(socket)
        except InvalidStatus as refused:
            raise CannotWatchError(
                f"the gateway refused the connection ({refused.response.status_code})"
            ) from refused
        except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as lost:
            reason = str(lost) or type(lost).__name__
        failures += 1
        if failures > reconnects:
            raise CannotWatchError(f"lost the gateway at {address}: {reason}")
        pause = min(2.0 ** (failures - 1), 10.0)
        click.echo(f"{reason}; reconnecting in {pause:.0f} s", err=True)
        time.sleep(pause)


def _messages(socket: Connection) -> Iterator[tuple[WatchedRun, str | None]]:
    """The run after each message, until the feed closes (normally or not: the close
    code says what to do next, see :func:`_reconnectable_close`)."""
    run: WatchedRun | None = None
    while True:
        try:
            raw = socket.recv()
        except ConnectionClosed:
            return
        message: dict[str, Any] = json.loads(raw)
        if message["type"] == "snapshot":
            run = WatchedRun.from_snapshot(message["run"])
            yield run, None
        elif run is not None and message["type"] in ("run", "node"):
            line = run.apply(message)
            if line is not None:
                yield run, line


def _reconnectable_close(socket: Connection) -> str:
    """Why the feed closed before the run ended, if reconnecting can help; a message
    (and exit code 3) if it cannot: an unknown run or a refused key."""
    code, reason = socket.close_code, socket.close_reason or ""
    if code == CLOSE_UNKNOWN_RUN or code in WEBSOCKET_CLOSE.values():
        raise CannotWatchError(reason or f"the gateway closed the feed ({code})")
    return f"the feed closed ({code}{': ' + reason if reason else ''})"
