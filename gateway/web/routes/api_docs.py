"""``/openapi.json``, ``/docs`` and ``/redoc``: the API's description, for a key holder.

With access control on they need a key of any scope, like every route but the health
checks: the schema lists every route and parameter an attacker would try.
``FIGWAY_API_DOCS_OPEN=true`` opens them (a public API, say). A browser cannot send a
key when it opens a page, so behind access control read the schema with the key
(``curl -H "Authorization: Bearer …" …/openapi.json``), or open the docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from backends.model.workflow import WorkflowDefinition

__all__ = ["describe_answers_and_links", "router"]

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - API")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")


def describe_answers_and_links(schema: dict[str, Any], node_types: Sequence[str]) -> dict[str, Any]:
    """Complete the generated OpenAPI ``schema`` with what route signatures cannot say:

    - the shape of a workflow definition (the body of ``PUT /workflows/{id}``, which
      the route reads off the event loop rather than as a typed body), with the node
      types this gateway knows;
    - the second success code of two routes: ``PUT /workflows/{id}`` answers 201 when
      the workflow is new, ``POST /workflow_runs/`` 200 when the job_run_id was known;
    - OpenAPI links, so a client (and schemathesis' stateful phase) can follow a
      workflow from its definition to a run, and the run to its status, kill and logs.
    """
    paths = schema["paths"]
    put = paths["/workflows/{workflow_id}"]["put"]
    _describe_definition(schema, put, node_types)
    start = paths["/workflow_runs/"]["post"]
    _also_answers(put, "201", like="200", description="The workflow was new: defined.")
    _also_answers(
        start, "200", like="201", description="The job_run_id was known: that run; nothing new."
    )
    to_start = {
        "operationId": start["operationId"],
        "description": "Start a run of the workflow just defined.",
        "requestBody": {
            "workflow_id": "$response.body#/workflow_id",
            "workspace_id": "$response.body#/definition/workspace_id",
            "folder_id": "$response.body#/definition/folder_id",
        },
    }
    to_run = {
        name: {
            "operationId": paths[path][method]["operationId"],
            "description": description,
            "parameters": {"path.job_run_id": "$response.body#/job_run_id"},
        }
        for name, path, method, description in (
            ("GetRun", "/workflow_runs/{job_run_id}", "get", "The run's status."),
            ("KillRun", "/workflow_runs/{job_run_id}", "delete", "Kill the run."),
            ("RunLogs", "/workflow_runs/{job_run_id}/logs", "get", "The run's log lines."),
        )
    }
    for code in ("200", "201"):
        put["responses"][code]["links"] = {"StartRun": to_start}
        start["responses"][code]["links"] = to_run
    return schema


def _also_answers(operation: dict[str, Any], code: str, *, like: str, description: str) -> None:
    operation["responses"].setdefault(
        code, {**operation["responses"][like], "description": description}
    )


def _describe_definition(
    schema: dict[str, Any], put: dict[str, Any], node_types: Sequence[str]
) -> None:
    described = WorkflowDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in described.pop("$defs", {}).items():
        components.setdefault(name, definition)
    node = components.get("NodeSpec", {}).get("properties", {})
    if "type" in node:
        node["type"] = {**node["type"], "enum": sorted(node_types)}
    # The path names the workflow; the body may leave it out.
    described["required"] = [
        name for name in described.get("required", []) if name != "workflow_id"
    ]
    described["title"] = "WorkflowDefinitionIn"
    components["WorkflowDefinitionIn"] = described
    content = put["requestBody"]["content"]["application/json"]
    content["schema"] = {"$ref": "#/components/schemas/WorkflowDefinitionIn"}
    content["example"] = {
        "workspace_id": "ws1",
        "folder_id": "folder1",
        "nodes": {"a": {"type": "noop"}, "b": {"type": "noop"}},
        "dependencies": {"b": ["a"]},
    }
