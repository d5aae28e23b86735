"""Run and node statuses, and the transitions allowed between them.

A run moves ``pending -> queued -> running -> succeeded | failed``; a kill
moves it through ``cancelling`` to ``cancelled``. A node moves
``pending -> queued -> running -> succeeded | failed``, may loop through
``retrying`` back to ``running``, and ends ``skipped`` when an upstream node
failed for good or ``cancelled`` when its run was killed.

Terminal statuses never change again: a late report from a worker (a job that
finished after its run was killed, a redelivered job) is refused, not applied.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "NODE_TERMINAL",
    "NODE_UNFINISHED_VALUES",
    "RUN_ACTIVE",
    "RUN_TERMINAL",
    "RUN_TERMINAL_VALUES",
    "NodeStatus",
    "RunStatus",
    "node_transition_allowed",
]


class RunStatus(StrEnum):
    PENDING = "pending"  # recorded, not yet accepted by a backend
    QUEUED = "queued"  # accepted by a backend, no node started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed and another one is due
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # an upstream node failed for good
    CANCELLED = "cancelled"


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
RUN_ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING})
NODE_TERMINAL = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)

#: The same sets in a fixed order, for SQL's ``IN`` (a statement is cached by its text).
RUN_TERMINAL_VALUES: tuple[str, ...] = tuple(sorted(RUN_TERMINAL))
NODE_UNFINISHED_VALUES: tuple[str, ...] = tuple(sorted(set(NodeStatus) - NODE_TERMINAL))

_NODE_NEXT: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset(
        {NodeStatus.QUEUED, NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    ),
    NodeStatus.QUEUED: frozenset({NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}),
    NodeStatus.RUNNING: frozenset(
        {
            NodeStatus.RUNNING,  # a later attempt after a crash nobody reported
            NodeStatus.RETRYING,
            NodeStatus.SUCCEEDED,
            NodeStatus.FAILED,
            NodeStatus.CANCELLED,
        }
    ),
    NodeStatus.RETRYING: frozenset({NodeStatus.RUNNING, NodeStatus.FAILED, NodeStatus.CANCELLED}),
}


def node_transition_allowed(current: NodeStatus, new: NodeStatus) -> bool:
    """Whether a node in ``current`` may move to ``new``.

    >>> node_transition_allowed(NodeStatus.RUNNING, NodeStatus.SUCCEEDED)
    True
    >>> node_transition_allowed(NodeStatus.CANCELLED, NodeStatus.RUNNING)
    False
    """
    return new in _NODE_NEXT.get(current, frozenset())
