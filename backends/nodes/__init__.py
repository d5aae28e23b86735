"""The node types both backends run, looked up by the name used in definitions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import NodeConfig, NodeContext, NodeType
from backends.nodes.bigquery import BIGQUERY_EXTRACT
from backends.nodes.builtin import BUILTIN_NODE_TYPES
from backends.nodes.http import HTTP_REQUEST
from backends.nodes.mysql import MYSQL_EXTRACT
from backends.nodes.policy import NodePolicy
from backends.nodes.postgres import POSTGRES_EXTRACT, POSTGRES_LOAD
from backends.nodes.transform import SQL_TRANSFORM

__all__ = [
    "NodeCancelledError",
    "NodeConfig",
    "NodeContext",
    "NodeFailedError",
    "NodePolicy",
    "NodeRegistry",
    "NodeType",
    "default_registry",
]


class NodeRegistry(Mapping[str, NodeType]):
    """Node types by name, each held to ``policy``. Read-only once built, so workers and
    gateway agree."""

    def __init__(self, node_types: Iterable[NodeType], policy: NodePolicy | None = None) -> None:
        self.policy = policy or NodePolicy()
        self._types = {
            node_type.name: dataclasses.replace(node_type, policy=self.policy)
            for node_type in node_types
        }

    def __getitem__(self, name: str) -> NodeType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def default_registry(policy: NodePolicy | None = None) -> NodeRegistry:
    """The node types shipped with figway, held to ``policy`` (unset: the policy this
    process's ``FIGWAY_*`` settings describe)."""
    return NodeRegistry(
        [
            *BUILTIN_NODE_TYPES,
            POSTGRES_EXTRACT,
            MYSQL_EXTRACT,
            BIGQUERY_EXTRACT,
            SQL_TRANSFORM,
            POSTGRES_LOAD,
            HTTP_REQUEST,
        ],
        policy or NodePolicy.from_environment(),
    )
