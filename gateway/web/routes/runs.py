"""``/workflow_runs``: start, read, kill, count and read the logs of runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from starlette.concurrency import run_in_threadpool

from backends.model.errors import RunNotFoundError
from backends.model.status import RunStatus
from backends.store.models import RUN_LEVEL
from gateway.dispatch.dispatcher import RunRequest
from gateway.web.deps import DispatcherDep, ServicesDep
from gateway.web.schemas import LogLineOut, LogsOut, RunIn, RunOut, StatsOut
from gateway.web.workspaces import KeyWorkspaces, ReachableRunId, ReachableStart

router = APIRouter(prefix="/workflow_runs", tags=["workflow runs"])

# 404 for a run outside the key's workspaces, as for one that does not exist.
RunId = ReachableRunId


@router.post(
    "/", status_code=status.HTTP_201_CREATED, response_model=RunOut, dependencies=[ReachableStart]
)
async def start_run(
    body: RunIn, dispatcher: DispatcherDep, services: ServicesDep, response: Response
) -> RunOut:
    """Start a run; repeating a job_run_id returns the same run (200) and starts nothing
    (202 while the run is still being submitted: look at it again shortly)."""
    request = RunRequest(**body.model_dump())
    run, created = await run_in_threadpool(dispatcher.start_run, request)
    if not created:
        # A repeat that finds the run still pending (another request is submitting it)
        # must not read as final: 202 says accepted, not yet with its backend.
        pending = run.status is RunStatus.PENDING
        response.status_code = status.HTTP_202_ACCEPTED if pending else status.HTTP_200_OK
        return RunOut.from_view(run, waiting_for=services.waiting_for(run))
    waiting = await run_in_threadpool(services.note_waiting, run)
    return RunOut.from_view(run, waiting_for=waiting)


@router.get("/stats", response_model=StatsOut)
async def run_stats(services: ServicesDep, workspaces: KeyWorkspaces) -> StatsOut:
    """Run counts in total, by status, by backend and by workflow (of the key's workspaces)."""
    return StatsOut(**await run_in_threadpool(lambda: services.store.stats(workspaces=workspaces)))


@router.get("/{job_run_id}", response_model=RunOut)
async def get_run(job_run_id: RunId, dispatcher: DispatcherDep, services: ServicesDep) -> RunOut:
    """A run's status, backend, timings and per-node status (and what it waits for)."""
    run = await run_in_threadpool(dispatcher.get_run, job_run_id)
    return RunOut.from_view(run, waiting_for=services.waiting_for(run))


@router.delete("/{job_run_id}", response_model=RunOut)
async def kill_run(job_run_id: RunId, dispatcher: DispatcherDep) -> RunOut:
    """Kill a run on whichever backend owns it; 409 if it already finished."""
    return RunOut.from_view(await run_in_threadpool(dispatcher.cancel_run, job_run_id))


@router.get("/{job_run_id}/logs", response_model=LogsOut)
async def run_logs(
    job_run_id: RunId,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only lines after this id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> LogsOut:
    """A run's log lines in order: time, level, node, attempt, message."""
    store = services.store
    if await run_in_threadpool(lambda: store.run_status(job_run_id=job_run_id)) is None:
        raise RunNotFoundError(f"no run {job_run_id!r}")
    rows = await run_in_threadpool(
        lambda: store.logs(job_run_id=job_run_id, after_id=after, limit=limit)
    )
    lines = [
        LogLineOut(
            id=line_id,
            time=record.at,
            level=record.level,
            node=None if record.node_id == RUN_LEVEL else record.node_id,
            attempt=record.attempt,
            message=record.message,
        )
        for line_id, record in rows
    ]
    return LogsOut(job_run_id=job_run_id, lines=lines, next_after=lines[-1].id if lines else after)
