"""``figway status``: the whole migration in one screen, read from a gateway over HTTP.

In the style of ``rq info`` and ``kubectl get``: the phase, each rule with its share per
backend and rollout step, guard and promotion state, the judge's verdicts with evidence
and confidence, runs in flight per backend, and the last rule changes with who made
them. The picture is drawn from the gateway's routing endpoints (the same ones the
console and scripts read), so ``figway status`` needs no database of its own.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import click
import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.cli.client_options import gateway_client_options
from gateway.reports.overview import CHANGES_SHOWN, StatusView, build_status

__all__ = ["status"]


@click.command()
@gateway_client_options("admin")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="The verdicts' window: runs finished since (a duration such as 24h, or an ISO time).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the same data as JSON, for scripts.")
@click.option("--watch", is_flag=True, help="Refresh in place until interrupted.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds between refreshes with --watch.",
)
def status(
    url: str, key: str | None, since: str, as_json: bool, watch: bool, interval: float
) -> None:
    """The migration at a glance: phase, rules and their shares, rollouts, guards, the
    judge's verdicts, runs in flight per backend and the last changes.

    Exits 1 when the gateway cannot be read (unreachable, refused key).
    """
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        if not watch:
            view = _read(client, since)
            if as_json:
                click.echo(json.dumps(view.as_dict(), indent=2))
            else:
                Console().print(render(view))
            return
        try:
            _watch(client, since, as_json, interval)
        except KeyboardInterrupt:
            sys.exit(0)


def _read(client: httpx.Client, since: str) -> StatusView:
    try:
        return gather_status(client, since=since)
    except httpx.HTTPStatusError as refused:
        detail = _detail(refused.response)
        raise click.ClickException(
            f"{refused.request.url.path}: {refused.response.status_code} {detail}"
        ) from refused
    except httpx.TransportError as lost:
        raise click.ClickException(
            f"cannot reach the gateway at {client.base_url}: {lost}"
        ) from lost


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def _watch(client: httpx.Client, since: str, as_json: bool, interval: float) -> None:
    if as_json:  # one JSON document per line, for a script reading a stream
        while True:
            click.echo(json.dumps(_read(client, since).as_dict()))
            time.sleep(interval)
    console = Console()
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            live.update(render(_read(client, since)), refresh=True)
            time.sleep(interval)


def gather_status(client: httpx.Client, *, since: str = "7d") -> StatusView:
    """Read everything the screen shows from the gateway ``client`` talks to; raises
    ``httpx.HTTPStatusError`` on a refusal (the key lacks the admin scope, for one)."""

    def get(path: str, **params: Any) -> Any:
        response = client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    return build_status(
        gateway=str(client.base_url).rstrip("/"),
        rules=get("/routing/rules"),
        guards=get("/routing/guards/status"),
        comparison=get("/routing/compare", since=since),
        in_flight=get("/routing/in-flight"),
        versions=get("/routing/history", limit=CHANGES_SHOWN),
        rollout_events=get("/routing/rollouts/history", limit=CHANGES_SHOWN),
        trips=get("/routing/guards", limit=CHANGES_SHOWN),
    )


# -- the picture ---------------------------------------------------------------------------

_ANSWER_STYLE = {"worse": "bold red", "not_worse": "green", "inconclusive": "yellow"}


def _row(table: Table, *cells: str | Text) -> None:
    """Add a row whose text is shown as it is: ids and reasons are never rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _when(value: str | None) -> str:
    if value is None:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def render(view: StatusView) -> RenderableType:
    """The status as a terminal shows it, section by section."""
    header = Text.assemble(
        ("figway ", "bold"),
        f"{view.gateway}  phase {view.phase}  rules {view.version}  default {view.default}  ",
        "backends " + ", ".join(f"{name} {state}" for name, state in view.backends.items()),
    )
    parts: list[RenderableType] = [header]
    if view.refused:
        parts.append(Text(f"refused rules file: {view.refused}", style="bold red"))

    rules = _table("RULES", "RULE", "MATCH", "SHARE", "STEP", "GUARD", "PROMOTION")
    for rule in view.rules:
        share = "  ".join(f"{backend} {percent:g}%" for backend, percent in rule["share"].items())
        if rule["shadow"]:
            share += f"  (+shadow {rule['shadow']})"
        _row(
            rules,
            rule["id"],
            rule["match"],
            share,
            rule["step"] or "-",
            Text(rule["guard"], style="bold red" if rule["guard"].startswith("tripped") else ""),
            rule["promotion"] or "-",
        )
    parts.append(rules)

    verdicts = _table(
        f"VERDICTS (since {_when(view.since)}: prefect against rq)",
        "WORKFLOW",
        "ANSWER",
        "RUNS prefect/rq",
        "EVIDENCE",
        "CONFIDENCE",
    )
    for verdict in view.verdicts:
        _row(
            verdicts,
            verdict["workflow_id"],
            Text(verdict["answer"], style=_ANSWER_STYLE.get(verdict["answer"], "")),
            f"{verdict['candidate_runs']}/{verdict['baseline_runs']}",
            "\n".join(verdict["evidence"]),
            f"{verdict['confidence']:.0%}",
        )
    parts.append(verdicts if view.verdicts else Text("no finished runs in the window"))

    flight = _table("IN FLIGHT", "BACKEND", "PENDING", "QUEUED", "RUNNING", "CANCELLING", "TOTAL")
    for backend, counts in view.in_flight.items():
        _row(
            flight,
            backend,
            *(str(counts.get(s, 0)) for s in ("pending", "queued", "running", "cancelling")),
            str(sum(counts.values())),
        )
    parts.append(flight)

    changes = _table("LAST CHANGES", "AT", "WHAT", "BY")
    for change in view.changes:
        _row(changes, _when(change["at"]), change["what"], change["by"])
    parts.append(changes)
    return Group(*(item for part in parts for item in (part, Text(""))))
