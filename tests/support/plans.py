"""Helpers shared by the unit tests: building plans and runs, reading the journal."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from backends.model.workflow import RunPlan, WorkflowDefinition, parse_definition
from backends.nodes import default_registry
from backends.store import Store
from backends.store.models import Transition

__all__ = ["journal", "make_plan", "one_node_workflow", "start_run"]


def make_plan(
    nodes: dict[str, Any],
    dependencies: dict[str, list[str]] | None = None,
    *,
    workflow_id: str = "wf",
    job_run_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> RunPlan:
    """A plan of a valid definition; node specs may be given as just a type name."""
    specs = {
        node_id: {"type": spec} if isinstance(spec, str) else spec
        for node_id, spec in nodes.items()
    }
    definition = parse_definition(
        {
            "workflow_id": workflow_id,
            "workspace_id": "ws1",
            "folder_id": "folder1",
            "nodes": specs,
            "dependencies": dependencies or {},
        },
        node_types=default_registry(),
    )
    return RunPlan.from_definition(
        definition,
        job_run_id=job_run_id or f"run-{uuid.uuid4().hex[:12]}",
        job_id="job1",
        parameters=parameters,
    )


def one_node_workflow(workflow_id: str) -> WorkflowDefinition:
    """A valid definition of one `noop` node, in workspace `ws`, folder `f`."""
    return parse_definition(
        {
            "workflow_id": workflow_id,
            "workspace_id": "ws",
            "folder_id": "f",
            "nodes": {"a": {"type": "noop"}},
        },
        node_types=default_registry(),
    )


def start_run(
    store: Store,
    nodes: dict[str, Any],
    dependencies: dict[str, list[str]] | None = None,
    **plan_options: Any,
) -> RunPlan:
    """Record a run and mark it accepted by its backend (run and nodes ``queued``)."""
    plan = make_plan(nodes, dependencies, **plan_options)
    assert store.create_run(plan=plan, backend="rq", from_job=None)
    store.mark_submitted(job_run_id=plan.job_run_id)
    return plan


def journal(store: Store, job_run_id: str) -> list[tuple[str, int, str]]:
    """The run's transition journal as (node, attempt, status), oldest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(Transition.node_id, Transition.attempt, Transition.status)
            .where(Transition.job_run_id == job_run_id)
            .order_by(Transition.id)
        ).all()
    return [(node, attempt, status) for node, attempt, status in rows]
