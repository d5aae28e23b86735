"""What the store hands out: read-only views of runs, nodes and log lines, and the
outcomes of the state machine's moves, with the mappers from rows to views.

Views are frozen dataclasses, so a caller can never write a row by accident; every
change goes through the state machine in ``backends/store/runs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backends.model.dag import levels
from backends.model.status import NodeStatus, RunStatus
from backends.model.workflow import NodeSpec
from backends.store.models import NodeRun, Run

__all__ = [
    "AttemptStart",
    "LogRecord",
    "NodeOutcome",
    "NodeView",
    "Route",
    "RunView",
    "StaleNode",
    "WorkflowVersion",
    "node_view",
    "node_views",
    "ordered_node_views",
    "run_view",
]


@dataclass(frozen=True)
class NodeView:
    node_id: str
    node_type: str
    status: NodeStatus
    attempts: int
    max_attempts: int
    error: str | None
    output: Any
    started_at: datetime | None
    finished_at: datetime | None
    #: Its depth in the DAG (0 for nodes with no upstream): the nodes of one level run
    #: in parallel, and a level starts when the one before it has ended.
    level: int = 0


@dataclass(frozen=True)
class WorkflowVersion:
    """Which version of a workflow is current, and since when the workflow exists."""

    workflow_id: str
    version: int
    registered_at: datetime


@dataclass(frozen=True)
class Route:
    """Why a run went to its backend: the rule (None for the default), version and reason."""

    rule: str | None
    version: str | None
    reason: str


@dataclass(frozen=True)
class RunView:
    job_run_id: str
    workflow_id: str
    workspace_id: str
    folder_id: str
    job_id: str
    from_job: str | None
    backend: str
    status: RunStatus
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    nodes: dict[str, NodeView] = field(default_factory=dict)
    route: Route | None = None
    shadow_of: str | None = None  # set on a shadow run: the client's run it shadows


@dataclass(frozen=True)
class NodeOutcome:
    """What recording a node transition did."""

    applied: bool  # False: a duplicate, or a move a terminal node may not make
    node_status: NodeStatus
    run_status: RunStatus
    skipped: tuple[str, ...] = ()  # downstream nodes skipped by this failure
    #: Downstream nodes this success made ready (every upstream node succeeded, the node
    #: not started): exactly one transition names each, so one releaser starts it.
    ready: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttemptStart:
    """What :meth:`Store.start_attempt` hands a starting attempt."""

    outcome: NodeOutcome
    spec: NodeSpec | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    upstream_outputs: Mapping[str, Any] = field(default_factory=dict)
    sandboxed: bool = False
    #: The workflow's workspace: what owns the secrets its nodes may use.
    workspace_id: str = ""
    #: Every node's config in the run's plan: the secrets any node of the run names are
    #: masked in this attempt too.
    run_configs: Mapping[str, Any] = field(default_factory=dict)
    #: Every node's spec in the run's plan, as stored (validated when a node is released).
    plan_nodes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRecord:
    job_run_id: str
    node_id: str
    attempt: int
    at: datetime
    level: str
    message: str


@dataclass(frozen=True)
class StaleNode:
    job_run_id: str
    node_id: str
    attempt: int
    backend: str


# -- rows into views ------------------------------------------------------------------


def node_view(row: NodeRun, level: int = 0) -> NodeView:
    return NodeView(
        node_id=row.node_id,
        node_type=row.node_type,
        status=NodeStatus(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        error=row.error,
        output=row.output,
        started_at=row.started_at,
        finished_at=row.finished_at,
        level=level,
    )


def node_views(session: Session, run: Run) -> dict[str, NodeView]:
    """The run's nodes in definition order."""
    rows = session.scalars(select(NodeRun).where(NodeRun.job_run_id == run.job_run_id)).all()
    return ordered_node_views(run.plan, rows)


def ordered_node_views(plan: Mapping[str, Any], rows: Sequence[NodeRun]) -> dict[str, NodeView]:
    """Node rows as views, in the plan's definition order, with their levels."""
    order = {node_id: index for index, node_id in enumerate(plan["nodes"])}
    level_of = {
        node_id: depth
        for depth, nodes in enumerate(levels(plan.get("upstream", {})))
        for node_id in nodes
    }
    return {
        row.node_id: node_view(row, level_of.get(row.node_id, 0))
        for row in sorted(rows, key=lambda r: order.get(r.node_id, len(order)))
    }


def run_view(run: Run, nodes: dict[str, NodeView]) -> RunView:
    return RunView(
        job_run_id=run.job_run_id,
        workflow_id=run.workflow_id,
        workspace_id=run.workspace_id,
        folder_id=run.folder_id,
        job_id=run.job_id,
        from_job=run.from_job,
        backend=run.backend,
        status=RunStatus(run.status),
        error=run.error,
        created_at=run.created_at,
        submitted_at=run.submitted_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        nodes=nodes,
        route=None
        if run.route_reason is None
        else Route(rule=run.route_rule, version=run.route_version, reason=run.route_reason),
        shadow_of=run.shadow_of,
    )
