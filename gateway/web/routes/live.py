"""Live status over WebSocket: ``/ws/workflow_runs/{job_run_id}`` on the API port, and
``/{job_run_id}`` on the legacy port (``--ws-port``, 8765) that existing clients use.

A client connects and receives, as JSON text messages:

1. ``{"type": "snapshot", "run": {...}}``: the run as ``GET /workflow_runs/{id}``
   shows it;
2. one message per transition, in the order they happened, from either backend:
   ``{"type": "node" | "run", "job_run_id", "node_id", "status", "attempt",
   "at", "backend", "error", "terminal"}``;
3. after the run's terminal message (``"terminal": true``), the server closes
   the socket with code 1000 and the reason ``run succeeded`` (or failed,
   cancelled). A run already finished gets its snapshot, then the close.

An unknown run is closed with code 4404; a client too slow to read is closed
with code 1013 (try again later), and reconnecting gives it a fresh snapshot.
A transition that happened while the snapshot was read may be sent once more
after it; statuses only move forward, so applying it again changes nothing.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect, status
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.routing import WebSocketRoute

from backends.model.errors import AccessDeniedError
from backends.model.ids import control_character_problem
from backends.model.status import RUN_TERMINAL
from backends.store.api_keys import KeyView
from gateway.live.close_codes import (
    CLOSE_TOO_MANY,
    CLOSE_TOO_SLOW,
    CLOSE_UNKNOWN_RUN,
    WEBSOCKET_CLOSE,
)
from gateway.live.feed import OVERFLOW
from gateway.services import Services
from gateway.web.access_log import AccessLog
from gateway.web.auth import AccessGate, acting_key_view, key_for_websocket
from gateway.web.exposure import HostGuard, origin_allowed
from gateway.web.limits import FollowerCaps
from gateway.web.schemas import RunIdPath, RunOut, TicketOut

__all__ = ["create_legacy_app", "follow_run", "router", "tickets_router"]

router = APIRouter(tags=["live status"])
#: ``POST /live/tickets``: plain HTTP, so it is guarded like every other route.
tickets_router = APIRouter(prefix="/live", tags=["live status"])

RunId = RunIdPath


@tickets_router.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=TicketOut)
async def issue_ticket(request: Request) -> TicketOut:
    """A one-use ticket for a browser to open one WebSocket with (`?ticket=`), instead of its key."""
    gate: AccessGate = request.app.state.access
    key = acting_key_view(request)
    if key is None:  # access control off: every socket opens without one
        return TicketOut(ticket=None, expires_in_seconds=0)
    ticket = await gate.issue_ticket(key)
    return TicketOut(ticket=ticket, expires_in_seconds=gate.ticket_seconds)


@router.websocket("/ws/workflow_runs/{job_run_id}")
async def live_run(websocket: WebSocket, job_run_id: RunId) -> None:
    """A run's snapshot, then each of its transitions as it happens (JSON messages)."""
    await follow_run(websocket, job_run_id, websocket.app.state)


async def follow_run(websocket: WebSocket, job_run_id: str, api_state: State) -> None:
    """Serve one client following one run, until the run ends or the client leaves.

    ``api_state`` is the API app's state (its services and access gate): the legacy
    port's app has none of its own.
    """
    services: Services = api_state.services
    await websocket.accept()
    if not origin_allowed(
        websocket.headers.get("origin"), services.settings, host=websocket.headers.get("host")
    ):
        # A page of another site: a browser sends its origin, and a key it may hold.
        await websocket.close(
            code=WEBSOCKET_CLOSE[403], reason="this page's origin may not follow runs"
        )
        return
    try:
        key = await key_for_websocket(websocket, api_state.access, "runs")
    except AccessDeniedError as failed:  # before the run is looked up: no hint whether it exists
        await websocket.close(code=WEBSOCKET_CLOSE[failed.code], reason=failed.detail)
        return
    caps: FollowerCaps = api_state.followers
    key_id = None if key is None else key.key_id
    refusal = caps.take(key_id)
    if refusal is not None:
        await websocket.close(code=CLOSE_TOO_MANY, reason=refusal)
        return
    try:
        await _follow(websocket, job_run_id, services, key)
    finally:
        caps.give_back(key_id)


async def _follow(
    websocket: WebSocket, job_run_id: str, services: Services, key: KeyView | None
) -> None:
    if control_character_problem(job_run_id):  # the legacy port's path is not typed
        await websocket.close(code=CLOSE_UNKNOWN_RUN, reason=f"no run {job_run_id!r}")
        return
    # The journal position first, then the snapshot: a transition between the two is
    # sent again rather than missed.
    after_id = await run_in_threadpool(services.journal.last_id, job_run_id=job_run_id)
    run = await run_in_threadpool(services.store.get_run, job_run_id=job_run_id)
    if run is None or (key is not None and not key.reaches(run.workspace_id)):
        await websocket.close(code=CLOSE_UNKNOWN_RUN, reason=f"no run {job_run_id!r}")
        return
    shown = RunOut.from_view(run, waiting_for=services.waiting_for(run))
    snapshot = {"type": "snapshot", "run": shown.model_dump(mode="json")}
    await websocket.send_text(json.dumps(snapshot))
    if run.status in RUN_TERMINAL:
        await websocket.close(code=1000, reason=f"run {run.status.value}")
        return
    follower = services.feed.follow(job_run_id, after_id=after_id)
    # The client sends nothing, but reading is how a departure is noticed.
    departure = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            next_message = asyncio.ensure_future(follower.queue.get())
            done, _ = await asyncio.wait(
                {next_message, departure}, return_when=asyncio.FIRST_COMPLETED
            )
            if departure in done:
                next_message.cancel()
                return
            message = next_message.result()
            if message is OVERFLOW:
                await websocket.close(
                    code=CLOSE_TOO_SLOW,
                    reason=f"more than {follower.limit} updates waiting; reconnect",
                )
                return
            await websocket.send_json(message)
            if message["terminal"]:
                await websocket.close(code=1000, reason=f"run {message['status']}")
                return
    except WebSocketDisconnect:
        return
    finally:
        departure.cancel()
        services.feed.unfollow(follower)


def create_legacy_app(api: FastAPI) -> Starlette:
    """The app on the legacy WebSocket port: ``/{job_run_id}``, served by the API's services."""

    async def legacy(websocket: WebSocket) -> None:
        await follow_run(websocket, websocket.path_params["job_run_id"], api.state)

    app = Starlette(routes=[WebSocketRoute("/{job_run_id}", legacy)])
    app.add_middleware(HostGuard, settings=api.state.settings)
    app.add_middleware(AccessLog)
    return app
