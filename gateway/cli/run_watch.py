"""One run as ``figway runs watch`` follows it: state folded from the live feed, and its picture.

The gateway's WebSocket (``/ws/workflow_runs/{id}``) sends a snapshot of the run, then
each transition; :class:`WatchedRun` folds them into the run's current state, and
:func:`render` draws it: one progress bar per level of the DAG (the nodes of a level
run in parallel) and each node's state. Kept apart from the command so that the
folding and the picture are tested without a gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from backends.model.status import RunStatus

__all__ = ["EXIT_CODES", "WatchedNode", "WatchedRun", "render"]

#: The command's exit code for each way a run ends, as shell scripts expect of a watcher.
EXIT_CODES: Mapping[str, int] = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.FAILED: 1,
    RunStatus.CANCELLED: 2,
}

#: Node states after which nothing more happens to the node.
_NODE_ENDED = frozenset({"succeeded", "failed", "skipped", "cancelled"})

_STYLE = {
    "pending": "dim",
    "queued": "cyan",
    "running": "bold yellow",
    "retrying": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "magenta",
    "cancelled": "red",
    "cancelling": "red",
}


@dataclass
class WatchedNode:
    node_id: str
    level: int
    status: str
    attempt: int
    max_attempts: int
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in _NODE_ENDED


@dataclass
class WatchedRun:
    """The run as the feed has told it so far."""

    job_run_id: str
    workflow_id: str
    backend: str
    status: str
    error: str | None
    nodes: dict[str, WatchedNode] = field(default_factory=dict)
    #: What the run waited for when the snapshot was taken (its backend still starting).
    waiting_for: str | None = None

    @classmethod
    def from_snapshot(cls, run: Mapping[str, Any]) -> WatchedRun:
        """The run from the feed's first message (the run as ``GET`` shows it)."""
        return cls(
            job_run_id=run["job_run_id"],
            workflow_id=run["workflow_id"],
            backend=run["backend"],
            status=run["status"],
            error=run.get("error"),
            waiting_for=run.get("waiting_for"),
            nodes={
                node_id: WatchedNode(
                    node_id=node_id,
                    level=node.get("level", 0),
                    status=node["status"],
                    attempt=node["attempts"],
                    max_attempts=node["max_attempts"],
                    error=node.get("error"),
                )
                for node_id, node in run["nodes"].items()
            },
        )

    def apply(self, message: Mapping[str, Any]) -> str | None:
        """Fold one transition in; returns a line describing it (None for a repeat).

        The feed may send a transition twice around the snapshot; statuses only move
        forward, so applying one again changes nothing and is not reported again.
        """
        status, error = message["status"], message.get("error")
        if message["type"] == "run":
            if status == self.status:
                return None
            self.status, self.error = status, error or self.error
            return f"run {self.job_run_id} {status}" + (f": {error}" if error else "")
        node = self.nodes.get(message["node_id"])
        if node is None:
            return None
        attempt = message.get("attempt") or node.attempt
        if (status, attempt) == (node.status, node.attempt):
            return None
        node.status, node.attempt, node.error = status, attempt, error
        where = f" (attempt {attempt}/{node.max_attempts})" if node.max_attempts > 1 else ""
        return f"node {node.node_id} {status}{where}" + (f": {error}" if error else "")

    @property
    def ended(self) -> bool:
        return self.status in EXIT_CODES

    def levels(self) -> list[list[WatchedNode]]:
        """The nodes grouped by level, in level order."""
        grouped: dict[int, list[WatchedNode]] = {}
        for node in self.nodes.values():
            grouped.setdefault(node.level, []).append(node)
        return [grouped[level] for level in sorted(grouped)]


def render(run: WatchedRun) -> RenderableType:
    """The run's picture: a header, then per level a bar of ended nodes and their states."""
    header = Text.assemble(
        (f"{run.workflow_id} ", "bold"),
        f"run {run.job_run_id} on {run.backend}: ",
        (run.status, _STYLE.get(run.status, "")),
    )
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("level", justify="right")
    table.add_column("progress", width=24)
    table.add_column("done", justify="right")
    table.add_column("nodes")
    for depth, nodes in enumerate(run.levels()):
        ended = sum(node.ended for node in nodes)
        states = Text(" ").join(
            Text(f"{node.node_id}:{node.status}", style=_STYLE.get(node.status, ""))
            for node in nodes
        )
        table.add_row(
            str(depth),
            ProgressBar(total=len(nodes), completed=ended),
            f"{ended}/{len(nodes)}",
            states,
        )
    parts: list[RenderableType] = [header]
    if run.waiting_for and run.status in ("pending", "queued"):
        parts.append(Text(f"waiting for {run.waiting_for}", style="yellow"))
    parts.append(table)
    if run.error:
        parts.append(Text(run.error, style="red"))
    return Group(*parts)
