"""``/workflows``: define workflows and read their definitions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from backends.model.errors import (
    AccessDeniedError,
    DefinitionError,
    DefinitionProblem,
    WorkflowNotFoundError,
)
from backends.model.workflow import parse_definition
from gateway.web.auth import acting_key_view
from gateway.web.deps import ServicesDep
from gateway.web.schemas import WorkflowOut

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowId = Annotated[str, Path(min_length=1, max_length=128)]


@router.put("/{workflow_id}", response_model=WorkflowOut)
async def put_workflow(
    workflow_id: WorkflowId,
    definition: Annotated[dict[str, Any], Body(description="The workflow definition.")],
    services: ServicesDep,
    request: Request,
    response: Response,
) -> WorkflowOut:
    """Create or replace a workflow definition (201 when new); invalid ones get 422 with every reason."""
    named = definition.setdefault("workflow_id", workflow_id)
    if named != workflow_id:
        raise DefinitionError(
            [
                DefinitionProblem(
                    "workflow_id", f"{named!r} differs from {workflow_id!r} in the path"
                )
            ]
        )
    parsed = parse_definition(
        definition, node_types=services.node_types, max_levels=services.settings.max_levels
    )
    code_nodes = sorted(
        node_id
        for node_id, spec in parsed.nodes.items()
        if services.node_types[spec.type].runs_code
    )
    key = acting_key_view(request)
    if code_nodes and key is not None and not key.scopes & {"code", "admin"}:
        # Code runs on the workers with their rights: naming it is more than defining a
        # workflow. 403 after validation, so a refused definition still lists its problems.
        raise AccessDeniedError(
            403,
            f"this key ({key.key_id}) may define workflows but not code: node(s) "
            f"{', '.join(code_nodes)} run python; a key with the 'code' scope may",
        )
    _, created = await run_in_threadpool(lambda: services.store.put_workflow(definition=parsed))
    if created:
        response.status_code = status.HTTP_201_CREATED
    return await get_workflow(workflow_id, services)


@router.get("/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(workflow_id: WorkflowId, services: ServicesDep) -> WorkflowOut:
    """A workflow's current definition and version."""
    row = await run_in_threadpool(lambda: services.store.get_workflow(workflow_id=workflow_id))
    if row is None:
        raise WorkflowNotFoundError(f"no workflow {workflow_id!r}")
    return WorkflowOut(
        workflow_id=row.workflow_id,
        version=row.version,
        registered_at=row.registered_at,
        updated_at=row.updated_at,
        definition=row.definition,
    )
