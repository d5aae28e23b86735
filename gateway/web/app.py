"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backends.nodes import default_registry
from backends.store.live_tickets import LiveTickets
from gateway.config import Settings, get_settings
from gateway.services import build_services, stop_ephemeral_prefect
from gateway.web.access_log import AccessLog, redact_uvicorn_logs
from gateway.web.auth import AccessGate, require_scope
from gateway.web.bodies import (
    JsonBodies,
    document_printable_parameters,
    refuse_control_characters,
)
from gateway.web.definition_checks import DefinitionChecker, DefinitionLimits
from gateway.web.errors import install_error_handlers
from gateway.web.exposure import HostGuard
from gateway.web.limits import BodyLimit, FollowerCaps, RateLimiter
from gateway.web.methods import AllowedMethods
from gateway.web.routes import (
    api_docs,
    compare,
    console,
    health,
    live,
    metrics,
    routing,
    runs,
    workflows,
)
from gateway.web.schemas import ERROR_RESPONSES

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, owns_process: bool = False) -> FastAPI:
    """The gateway app; it connects to its database and backends when it starts serving.

    ``owns_process``: this app is the process (``figway serve``), so its shutdown also
    stops what the process started for it, such as Prefect's ephemeral API server.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        if settings.embedded:
            # The in-process Redis stand-in starts empty: runs left active by the last
            # process can never finish, so they end failed instead of running forever.
            services.store.abandon_active_runs(
                reason="lost: the embedded gateway stopped while it ran"
            )
            services.start_embedded_workers()
        services.start_backends()  # Prefect's temporary API, when flows run in-process
        services.start_background()
        services.start_live_feed()
        app.state.services = services
        app.state.dispatcher = services.dispatcher
        app.state.access = AccessGate(
            services.keys,
            LiveTickets(services.engine),
            required=settings.auth_required,
            limiter=RateLimiter(settings.rate_limit_per_minute),
            address_limiter=RateLimiter(settings.address_rate_limit_per_minute),
            key_cache_seconds=settings.key_cache_seconds,
            ticket_seconds=settings.live_ticket_seconds,
        )
        app.state.definitions = DefinitionChecker(
            settings.node_policy(),
            DefinitionLimits(
                max_levels=settings.max_levels,
                max_nodes=settings.max_nodes,
                max_query_chars=settings.max_query_chars,
            ),
            warm=owns_process,
        )
        app.state.followers = FollowerCaps(
            per_key=settings.live_followers_per_key, total=settings.live_followers_max
        )
        try:
            yield
        finally:
            app.state.definitions.close()
            services.close()
            if owns_process:
                stop_ephemeral_prefect()

    app = FastAPI(
        title="figway",
        summary="The workflow_runs API, routed to Redis RQ or Prefect 3 run by run.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(refuse_control_characters)],
        # Served by routes/api_docs.py, behind the key check unless an operator opens them.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_docs.describe_answers_and_links(
                document_printable_parameters(plain_openapi()),
                node_types=list(default_registry(settings.node_policy())),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.settings = settings  # what the legacy WebSocket app is guarded by, too
    install_error_handlers(app)
    app.add_middleware(AllowedMethods, paths=lambda: app.openapi()["paths"])
    # JSON bodies decoded off the loop (422 for one that is not JSON); inside BodyLimit, so
    # an oversized body is refused before it is read whole.
    app.add_middleware(JsonBodies)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # closed unless an operator names the origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Added last, so it runs first: a request for a foreign host name is refused before
    # anything else looks at it.
    app.add_middleware(HostGuard, settings=settings)
    # Outermost: every answer is logged, the host guard's and the body limit's included.
    app.add_middleware(AccessLog)
    redact_uvicorn_logs()
    guarded = [
        (runs.router, "runs"),
        (live.tickets_router, "runs"),
        (workflows.router, "workflows"),
        (routing.router, "admin"),
        (compare.router, "admin"),
    ]
    for router, scope in guarded:
        app.include_router(
            router, dependencies=[Depends(require_scope(scope))], responses=ERROR_RESPONSES
        )
    app.include_router(health.router)
    # The pages are static and open; the panel they fetch checks its key section by section.
    app.include_router(console.router)
    any_key = [Depends(require_scope(None))]
    metrics_access = any_key if settings.metrics_require_key else []
    app.include_router(metrics.router, dependencies=metrics_access, responses=ERROR_RESPONSES)
    app.include_router(api_docs.router, dependencies=[] if settings.api_docs_open else any_key)
    app.include_router(live.router)  # checks its key itself: a WebSocket is closed, not 401
    return app
