"""The node types both backends run, looked up by the name used in definitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import NodeConfig, NodeContext, NodeType
from backends.nodes.bigquery import BIGQUERY_EXTRACT
from backends.nodes.builtin import BUILTIN_NODE_TYPES
from backends.nodes.http import HTTP_REQUEST
from backends.nodes.mysql import MYSQL_EXTRACT
from backends.nodes.postgres import POSTGRES_EXTRACT, POSTGRES_LOAD
from backends.nodes.transform import SQL_TRANSFORM

__all__ = [
    "NodeCancelledError",
    "NodeConfig",
    "NodeContext",
    "NodeFailedError",
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
    return NodeRegistry(
        [
            *BUILTIN_NODE_TYPES,
            POSTGRES_EXTRACT,
            MYSQL_EXTRACT,
            BIGQUERY_EXTRACT,
            SQL_TRANSFORM,
            POSTGRES_LOAD,
            HTTP_REQUEST,
        ]
    )
