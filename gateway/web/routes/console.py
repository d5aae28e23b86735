"""The console: ``/`` and ``/console`` (the page), ``/console/runs/{id}`` (one run, live),
``/console/panel`` (what the page shows, for the key it sends).

The pages are static files with nothing secret in them, served without a key; what
they show comes from ``/console/panel`` and the API, called with the key the user
pastes (kept in the tab's ``sessionStorage``), under the API's own access rules.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from backends.model.errors import NotFoundError
from backends.store import utcnow
from backends.store.api_keys import SCOPES
from gateway.reports.comparison import DEFAULT_SINCE, parse_since
from gateway.web.auth import acting_key_view, require_scope
from gateway.web.console.panel import gather_panel, render_panel
from gateway.web.deps import ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)

_STATIC = resources.files("gateway.web.console") / "static"
_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
}
#: The pages load their own script and style only, and talk to this gateway only.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((_STATIC / name).read_text(encoding="utf-8"), headers=_HEADERS)


@router.get("/", response_class=HTMLResponse)
@router.get("/console", response_class=HTMLResponse)
async def console_page() -> HTMLResponse:
    """The console page (static; it asks for a key where one is needed)."""
    return _page("index.html")


@router.get("/console/runs/{job_run_id}", response_class=HTMLResponse)
async def run_page(job_run_id: str) -> HTMLResponse:
    """One run, followed live (static; the run is read with the user's key)."""
    return _page("run.html")


@router.get("/console/static/{name}")
async def static_file(name: str) -> Response:
    """The console's script and style sheet."""
    if name not in _TYPES:
        raise NotFoundError(f"no console file {name!r}")
    return Response((_STATIC / name).read_bytes(), media_type=_TYPES[name], headers=_HEADERS)


@router.get(
    "/console/panel", response_class=HTMLResponse, dependencies=[Depends(require_scope(None))]
)
async def panel(
    services: ServicesDep,
    request: Request,
    since: Annotated[str, Query(max_length=64, description="The comparison's window.")] = (
        DEFAULT_SINCE
    ),
) -> HTMLResponse:
    """The console's panel for this key: each section the key's scopes may read."""
    now = utcnow()
    try:
        start = parse_since(since, now=now)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "since"), "msg": str(exc), "input": since}]
        ) from exc
    key = acting_key_view(request)
    scopes = SCOPES if key is None else tuple(key.scopes)
    html = await run_in_threadpool(
        lambda: render_panel(gather_panel(services, scopes=scopes, since=start, now=now))
    )
    return HTMLResponse(html, headers=_HEADERS)
