"""``/healthz`` (the process answers) and ``/readyz`` (its database and backends answer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backends.model.errors import StoreError
from gateway.web.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """The database and every backend the rules enable answer; 503 naming what does not.

    A backend switched off under ``backends:`` in the rules is not waited for: in
    phase 3 RQ may be gone.
    """
    checks: dict[str, Any] = {}
    try:
        await run_in_threadpool(services.store.ping)
        checks["database"] = {"up": True}
    except StoreError as exc:
        checks["database"] = {"up": False, "detail": str(exc)}
    rules = services.rules.document.rules
    for name, executor in services.executors.items():
        if not rules.enabled(name):
            checks[name] = {"up": True, "detail": "switched off in the routing rules"}
            continue
        health = await run_in_threadpool(executor.health)
        checks[name] = {"up": health.up, "detail": health.detail, "workers": health.workers}
        startup = services.startups.get(name)
        if startup is not None:
            # Not "down": runs are accepted and wait for it; but an operator sees it coming.
            checks[name]["startup"] = startup.as_dict()
            if startup.state == "starting":
                checks[name]["detail"] = f"{startup.waiting_for()}; {health.detail}"
    ready = all(check["up"] for check in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )
