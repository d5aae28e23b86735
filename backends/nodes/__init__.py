"""The node types both backends run, looked up by the name used in definitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from backends.nodes.base import NodeConfig, NodeContext, NodeType
from backends.nodes.builtin import BUILTIN_NODE_TYPES, NodeCancelled, NodeFailure

__all__ = [
    "NodeCancelled",
    "NodeConfig",
    "NodeContext",
    "NodeFailure",
    "NodeRegistry",
    "NodeType",
    "default_registry",
]


class NodeRegistry(Mapping[str, NodeType]):
    """Node types by name. Read-only once built, so workers and gateway agree."""

    def __init__(self, node_types: Iterable[NodeType]) -> None:
        self._types = {node_type.name: node_type for node_type in node_types}

    def __getitem__(self, name: str) -> NodeType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def default_registry() -> NodeRegistry:
    """The node types shipped with figway."""
    return NodeRegistry(BUILTIN_NODE_TYPES)
