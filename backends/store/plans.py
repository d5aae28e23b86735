"""A run's plan as the JSON document stored with it (``runs.plan``), and back.

The plan is frozen when the run is accepted: workers and the reconciler always read
this snapshot, so editing a definition never changes a run that has started.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.model.workflow import NodeSpec, RunPlan

__all__ = ["plan_from_document", "plan_to_document"]


def plan_to_document(plan: RunPlan) -> dict[str, Any]:
    return {
        "workflow_id": plan.workflow_id,
        "workspace_id": plan.workspace_id,
        "folder_id": plan.folder_id,
        "job_id": plan.job_id,
        "pool": plan.pool,
        "nodes": {node_id: spec.model_dump(mode="json") for node_id, spec in plan.nodes.items()},
        "upstream": {node_id: list(parents) for node_id, parents in plan.upstream.items()},
        "parameters": dict(plan.parameters),
        "sandboxed": plan.sandboxed,
    }


def plan_from_document(document: Mapping[str, Any], job_run_id: str) -> RunPlan:
    return RunPlan(
        job_run_id=job_run_id,
        workflow_id=document["workflow_id"],
        workspace_id=document["workspace_id"],
        folder_id=document["folder_id"],
        job_id=document["job_id"],
        pool=document["pool"],
        nodes={k: NodeSpec.model_validate(v) for k, v in document["nodes"].items()},
        upstream={k: tuple(v) for k, v in document["upstream"].items()},
        parameters=document.get("parameters", {}),
        sandboxed=document.get("sandboxed", False),
    )
