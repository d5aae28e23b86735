"""The workflow shapes the benchmark runs, as figway definitions and as native RQ DAGs.

Every node is a ``noop``, so what is measured is the machinery around nodes:
submission, dependency release, dispatch to a worker, state recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BenchDag", "chain", "layered", "small"]

WORKSPACE_ID = "bench"
FOLDER_ID = "bench"


@dataclass(frozen=True)
class BenchDag:
    """A DAG of noop nodes: ``upstream`` maps each node to the nodes it waits for."""

    workflow_id: str
    description: str
    upstream: Mapping[str, tuple[str, ...]]

    @property
    def size(self) -> int:
        return len(self.upstream)

    def level_order(self) -> list[str]:
        """Node ids with every node after all of its upstream nodes (insertion order is one)."""
        return list(self.upstream)

    def sinks(self) -> list[str]:
        """The nodes nothing depends on: the run is over when they all are."""
        parents = {parent for ups in self.upstream.values() for parent in ups}
        return [node for node in self.upstream if node not in parents]

    def definition(self, *, backend: str | None = None) -> dict[str, Any]:
        """The body of ``PUT /workflows/{workflow_id}``; ``backend`` pins the run's backend.

        >>> small().definition(backend="prefect")["backend"]
        'prefect'
        """
        body: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "workspace_id": WORKSPACE_ID,
            "folder_id": FOLDER_ID,
            "description": self.description,
            "tags": ["benchmark"],
            "nodes": {node: {"type": "noop"} for node in self.upstream},
            "dependencies": {node: list(ups) for node, ups in self.upstream.items()},
        }
        if backend is not None:
            body["backend"] = backend
        return body


def chain(length: int = 20) -> BenchDag:
    """``length`` nodes, each waiting for the one before: one node per level.

    >>> chain(3).upstream
    {'n00': (), 'n01': ('n00',), 'n02': ('n01',)}
    """
    nodes = [f"n{i:02d}" for i in range(length)]
    upstream = {node: (nodes[i - 1],) if i else () for i, node in enumerate(nodes)}
    return BenchDag(f"bench_chain_{length}", f"a {length}-level chain of noop nodes", upstream)


def layered(levels: int = 20, width: int = 10) -> BenchDag:
    """``levels`` levels of ``width`` nodes; every node of level k waits for all of level k-1.

    >>> dag = layered(2, 2)
    >>> dag.upstream["l01_n01"]
    ('l00_n00', 'l00_n01')
    """
    upstream: dict[str, tuple[str, ...]] = {}
    previous: tuple[str, ...] = ()
    for level in range(levels):
        current = tuple(f"l{level:02d}_n{i:02d}" for i in range(width))
        for node in current:
            upstream[node] = previous
        previous = current
    return BenchDag(
        f"bench_layered_{levels}x{width}",
        f"{levels} levels of {width} noop nodes, each node waiting for every node of the level below",
        upstream,
    )


def small() -> BenchDag:
    """Five nodes in three levels (one, three, one): the DAG of the submit-latency part.

    >>> small().sinks()
    ['e']
    """
    upstream = {"a": (), "b": ("a",), "c": ("a",), "d": ("a",), "e": ("b", "c", "d")}
    return BenchDag("bench_small_5", "five noop nodes: a -> (b, c, d) -> e", upstream)
