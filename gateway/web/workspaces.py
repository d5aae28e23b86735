"""Keys bound to workspaces: what such a key lists, reads, starts, kills or follows.

A key made with ``figway keys create --workspace ws1 …`` sees only runs and workflows of
its workspaces. Anything else answers exactly as if it did not exist (404, the same
body), so a key cannot even learn that another workspace's run or workflow is there.
A key without workspaces, and every request with access control off, reaches them all.

These are dependencies, so routes stay thin: ``ReachableRunId`` in place of a run id
path parameter, ``ReachableStart`` on the start route, ``KeyWorkspaces`` for lists.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from backends.model.errors import AccessDeniedError, RunNotFoundError, WorkflowNotFoundError
from backends.store.api_keys import KeyView
from gateway.web.auth import acting_key_view
from gateway.web.deps import ServicesDep
from gateway.web.schemas import RunIdPath, RunIn

__all__ = [
    "KeyWorkspaces",
    "ReachableRunId",
    "ReachableStart",
    "key_workspaces",
    "refuse_foreign_definition",
    "workflow_reachable",
]


def key_workspaces(request: Request) -> frozenset[str] | None:
    """The workspaces the request's key is limited to; None: every workspace."""
    key = acting_key_view(request)
    return None if key is None else key.workspaces


KeyWorkspaces = Annotated[frozenset[str] | None, Depends(key_workspaces)]


async def _reachable_run(job_run_id: RunIdPath, request: Request, services: ServicesDep) -> str:
    key = acting_key_view(request)
    if key is not None and key.workspaces is not None:
        run = await run_in_threadpool(
            lambda: services.store.get_run(job_run_id=job_run_id, with_nodes=False)
        )
        if run is not None and not key.reaches(run.workspace_id):
            # Word for word what a run that does not exist gets (Dispatcher.get_run).
            raise RunNotFoundError(f"no run {job_run_id!r}")
    return job_run_id


#: A run id path parameter: 404 unless the key reaches the run's workspace.
ReachableRunId = Annotated[str, Depends(_reachable_run)]


def workflow_reachable(key: KeyView | None, workspace_id: str | None) -> bool:
    """Whether ``key`` reaches a workflow of ``workspace_id`` (None: it does not exist)."""
    return workspace_id is None or key is None or key.reaches(workspace_id)


async def _reachable_start(body: RunIn, request: Request, services: ServicesDep) -> None:
    key = acting_key_view(request)
    if key is None or key.workspaces is None:
        return
    workflow = await run_in_threadpool(
        lambda: services.store.get_workflow(workflow_id=body.workflow_id)
    )
    workspace = None if workflow is None else workflow.workspace_id
    if not (key.reaches(body.workspace_id) and workflow_reachable(key, workspace)):
        # Word for word what starting a workflow that does not exist gets (Dispatcher).
        raise WorkflowNotFoundError(
            f"no workflow {body.workflow_id!r}; define it with PUT /workflows/{body.workflow_id}"
        )


#: On the start route: 404 unless the key reaches the workflow's (and the body's) workspace.
ReachableStart = Depends(_reachable_start)


def refuse_foreign_definition(key: KeyView | None, *workspaces: str | None) -> None:
    """403 unless ``key`` may define workflows in each of ``workspaces`` (the new
    definition's, and the stored one's when the workflow exists)."""
    if key is None or key.workspaces is None:
        return
    if all(ws is None or key.reaches(ws) for ws in workspaces):
        return
    raise AccessDeniedError(
        403,
        f"this key ({key.key_id}) may define workflows of workspace(s) "
        f"{', '.join(sorted(key.workspaces))} only",
    )
