"""``/openapi.json``, ``/docs`` and ``/redoc``: the API's description, for a key holder.

With access control on they need a key of any scope, like every route but the health
checks: the schema lists every route and parameter an attacker would try.
``FIGWAY_API_DOCS_OPEN=true`` opens them (a public API, say). A browser cannot send a
key when it opens a page, so behind access control read the schema with the key
(``curl -H "Authorization: Bearer …" …/openapi.json``), or open the docs.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

__all__ = ["router"]

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
