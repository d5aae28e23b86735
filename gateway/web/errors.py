"""Every error the API returns is JSON a person can act on: ``{"detail": ..., "errors": [...]}``.

Bad input is 4xx with the field named; a backend or database that is down is
503 with what to do; anything unexpected is a plain 500 with no stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.model.errors import (
    AccessDeniedError,
    BackendError,
    BackendUnavailableError,
    DefinitionError,
    DefinitionTooLargeError,
    NotFoundError,
    RunConflictError,
    StoreError,
    SubmitFailedError,
)

__all__ = ["access_denied_headers", "error_body", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_body(detail: str, errors: Sequence[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "errors": list(errors), **extra}


def access_denied_headers(denied: AccessDeniedError) -> dict[str, str] | None:
    """What a client needs to act on a refusal: how to authenticate, or when to retry."""
    if denied.code == 401:
        return {"WWW-Authenticate": "Bearer"}
    if denied.retry_after is not None:
        return {"Retry-After": str(denied.retry_after)}
    return None


def _field(location: Sequence[Any]) -> str:
    # ("body", "workflow_id") -> "workflow_id"; the request part is implied.
    parts = [str(p) for p in location]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            # A JSON syntax error's location is a character offset, not a field.
            error = {
                "field": "body" if e["type"] == "json_invalid" else _field(e["loc"]),
                "message": e["msg"],
            }
            if error not in errors:  # a body a dependency reads too is checked twice
                errors.append(error)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(
            status_code=422, content=error_body(f"invalid request: {summary}", errors)
        )

    @app.exception_handler(DefinitionError)
    async def invalid_definition(request: Request, exc: DefinitionError) -> JSONResponse:
        errors = [{"field": p.location, "message": p.message} for p in exc.problems]
        # A definition too large to take is 413 (its size), any other problem 422.
        code = 413 if isinstance(exc, DefinitionTooLargeError) else 422
        return JSONResponse(
            status_code=code, content=error_body(f"invalid workflow: {exc}", errors)
        )

    @app.exception_handler(AccessDeniedError)
    async def access_denied(request: Request, exc: AccessDeniedError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.code,
            content=error_body(exc.detail),
            headers=access_denied_headers(exc),
        )

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=404, content=error_body(str(exc)))

    @app.exception_handler(RunConflictError)
    async def conflict(request: Request, exc: RunConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content=error_body(str(exc)))

    @app.exception_handler(SubmitFailedError)
    async def submit_failed(request: Request, exc: SubmitFailedError) -> JSONResponse:
        body = error_body(str(exc), job_run_id=exc.job_run_id, status="pending")
        return JSONResponse(status_code=503, content=body, headers={"Retry-After": "5"})

    @app.exception_handler(BackendUnavailableError)
    async def backend_down(request: Request, exc: BackendUnavailableError) -> JSONResponse:
        detail = f"backend {exc.backend!r} is unreachable: {exc.message}; try again shortly"
        return JSONResponse(
            status_code=503, content=error_body(detail), headers={"Retry-After": "5"}
        )

    @app.exception_handler(BackendError)
    async def backend_refused(request: Request, exc: BackendError) -> JSONResponse:
        # Unavailable is handled above; what is left is the backend refusing the request.
        detail = f"backend {exc.backend!r} refused the request: {exc.message}"
        return JSONResponse(status_code=502, content=error_body(detail))

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.error("database error: %s", exc)
        detail = "figway's database is unavailable; try again shortly"
        return JSONResponse(
            status_code=503, content=error_body(detail), headers={"Retry-After": "5"}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(str(exc.detail)),
            headers=exc.headers,  # WWW-Authenticate on a 401
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500, content=error_body("internal error; see the gateway log")
        )
