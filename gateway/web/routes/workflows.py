"""``/workflows``: define workflows and read their definitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from backends.model.errors import (
    AccessDeniedError,
    DefinitionError,
    DefinitionProblem,
    DefinitionTooLargeError,
    WorkflowNotFoundError,
)
from backends.model.workflow import WorkflowDefinition
from backends.store.api_keys import KeyView
from gateway.services import Services
from gateway.web.auth import acting_key_view
from gateway.web.bodies import decoded_json
from gateway.web.definition_checks import DefinitionChecker
from gateway.web.deps import ServicesDep
from gateway.web.schemas import WorkflowIdPath, WorkflowOut
from gateway.web.workspaces import refuse_foreign_definition, workflow_reachable

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowId = WorkflowIdPath


#: The request body, documented by hand: the route reads the document JsonBodies decoded
#: (off the event loop), not a body parameter FastAPI would decode on it.
_DEFINITION_BODY = {
    "requestBody": {
        "required": True,
        "description": "The workflow definition (docs/architecture.md, the definition format).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _admit(
    raw_size: int, definition: Any, workflow_id: str, services: Services, key: KeyView | None
) -> dict[str, Any]:
    """The cheap checks, in a worker thread (one reads the store): size, shape, the
    path's id, the key's workspaces. The definition, with its workflow_id."""
    settings = services.settings
    if raw_size > settings.max_definition_bytes:
        raise DefinitionTooLargeError(
            [
                DefinitionProblem(
                    "body",
                    f"the definition is {raw_size} bytes; at most "
                    f"{settings.max_definition_bytes} (FIGWAY_MAX_DEFINITION_BYTES)",
                )
            ]
        )
    if not isinstance(definition, dict):
        raise DefinitionError([DefinitionProblem("body", "a definition is a JSON object")])
    if key is not None and key.workspaces is not None:
        stored = services.store.get_workflow(workflow_id=workflow_id)
        refuse_foreign_definition(
            key,
            str(definition.get("workspace_id", "")),
            None if stored is None else stored.workspace_id,
        )
    named = definition.setdefault("workflow_id", workflow_id)
    if named != workflow_id:
        raise DefinitionError(
            [
                DefinitionProblem(
                    "workflow_id", f"{named!r} differs from {workflow_id!r} in the path"
                )
            ]
        )
    return definition


def _refuse_code(parsed: WorkflowDefinition, services: Services, key: KeyView | None) -> None:
    code_nodes = sorted(
        node_id
        for node_id, spec in parsed.nodes.items()
        if services.node_types[spec.type].runs_code
    )
    if code_nodes and key is not None and not key.scopes & {"code", "admin"}:
        # Code runs on the workers with their rights: naming it is more than defining a
        # workflow. 403 after validation, so a refused definition still lists its problems.
        raise AccessDeniedError(
            403,
            f"this key ({key.key_id}) may define workflows but not code: node(s) "
            f"{', '.join(code_nodes)} run python; a key with the 'code' scope may",
        )


@router.put("/{workflow_id}", response_model=WorkflowOut, openapi_extra=_DEFINITION_BODY)
async def put_workflow(
    workflow_id: WorkflowId, services: ServicesDep, request: Request
) -> Response:
    """Create or replace a workflow definition (201 when new); invalid ones get 422 with every reason."""
    raw_size = len(await request.body())
    key = acting_key_view(request)
    definition = await run_in_threadpool(
        _admit, raw_size, decoded_json(request), workflow_id, services, key
    )
    # Parsing (DuckDB holds the GIL) runs in a process of its own: definition_checks.py.
    checker: DefinitionChecker = request.app.state.definitions
    parsed = await checker.parse(definition)
    _refuse_code(parsed, services, key)
    _, created = await run_in_threadpool(lambda: services.store.put_workflow(definition=parsed))
    answer = await get_workflow(workflow_id, services, request)
    answer.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return answer


@router.get("/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(
    workflow_id: WorkflowId, services: ServicesDep, request: Request
) -> Response:
    """A workflow's current definition and version."""
    row = await run_in_threadpool(lambda: services.store.get_workflow(workflow_id=workflow_id))
    # Outside the key's workspaces: the same 404 as a workflow that does not exist.
    if row is None or not workflow_reachable(acting_key_view(request), row.workspace_id):
        raise WorkflowNotFoundError(f"no workflow {workflow_id!r}")
    # Serialised in a worker thread: a definition may be a megabyte of JSON.
    body = await run_in_threadpool(
        lambda: WorkflowOut(
            workflow_id=row.workflow_id,
            version=row.version,
            registered_at=row.registered_at,
            updated_at=row.updated_at,
            definition=row.definition,
        ).model_dump_json()
    )
    return Response(body, media_type="application/json")
