"""The shape of a workflow: levels, cycles and downstream sets of a node graph.

Graphs are given as ``upstream``: node id -> the node ids it depends on.
Every function here is pure and deterministic (ties are broken by node id),
so a plan computed by the gateway and by a worker is the same plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["downstream_of", "find_cycle", "levels"]

Graph = Mapping[str, Iterable[str]]


def find_cycle(upstream: Graph) -> list[str] | None:
    """A cycle in the graph as a closed path, or None when there is none.

    >>> find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]})
    ['a', 'c', 'b', 'a']
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(upstream, white)
    for start in sorted(upstream):
        if colour[start] != white:
            continue
        # Iterative depth-first search: a deep chain must not hit the recursion limit.
        path: list[str] = [start]
        stack = [iter(sorted(upstream[start]))]
        colour[start] = grey
        while stack:
            child = next(stack[-1], None)
            if child is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if child not in colour:
                continue  # unknown node: reported by the caller's own check
            if colour[child] == grey:
                return [*path[path.index(child) :], child]
            if colour[child] == white:
                colour[child] = grey
                path.append(child)
                stack.append(iter(sorted(upstream[child])))
    return None


def levels(upstream: Graph) -> list[list[str]]:
    """Nodes grouped by level: level 0 has no upstream, level n depends on level n-1 or below.

    The graph must be acyclic (check with :func:`find_cycle` first).

    >>> levels({"load": ["t"], "t": ["a", "b"], "a": [], "b": []})
    [['a', 'b'], ['t'], ['load']]
    """
    depth: dict[str, int] = {}
    for node in sorted(upstream):
        _depth_of(node, upstream, depth)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in sorted(depth):
        grouped[depth[node]].append(node)
    return grouped


def _depth_of(node: str, upstream: Graph, depth: dict[str, int]) -> int:
    stack = [node]
    while stack:
        current = stack[-1]
        if current in depth:
            stack.pop()
            continue
        pending = [up for up in upstream.get(current, ()) if up not in depth]
        if pending:
            stack.extend(pending)
            continue
        depth[current] = 1 + max((depth[up] for up in upstream.get(current, ())), default=-1)
        stack.pop()
    return depth[node]


def downstream_of(node: str, upstream: Graph) -> set[str]:
    """Every node that depends on ``node``, directly or through others.

    >>> sorted(downstream_of("a", {"a": [], "b": ["a"], "c": ["b"], "d": []}))
    ['b', 'c']
    """
    children: dict[str, list[str]] = {}
    for child, parents in upstream.items():
        for parent in parents:
            children.setdefault(parent, []).append(child)
    found: set[str] = set()
    frontier = [node]
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found
