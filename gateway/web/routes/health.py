"""``/healthz`` (the process answers) and ``/readyz`` (its database and backends answer).

``/readyz`` is open to anyone who reaches the port, so it says only up or down and a
reason word per check; the details (hosts, connection errors) go to the gateway's log,
once per change.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backends.contract import BackendHealth
from backends.model.errors import StoreError
from gateway.web.deps import ServicesDep

__all__ = ["readiness", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: What each check last logged, so a probe every few seconds logs a problem once.
_last_logged: dict[str, str] = {}
_log_lock = threading.Lock()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """The database and every backend the rules enable answer, and every work pool holding
    work has a worker; 503 with a reason word per check otherwise.

    A backend switched off under ``backends:`` in the rules is not waited for: in
    phase 3 RQ may be gone.
    """
    checks: dict[str, Any] = {}
    try:
        await run_in_threadpool(services.store.ping)
        checks["database"] = {"up": True}
        _log_change("database", "")
    except StoreError as exc:
        checks["database"] = {"up": False, "reason": "unreachable"}
        _log_change("database", str(exc))
    rules = services.rules.document.rules
    for name, executor in services.executors.items():
        if not rules.enabled(name):
            checks[name] = {"up": True, "reason": "switched_off"}
            continue
        health = await run_in_threadpool(executor.health)
        checks[name] = readiness(health)
        _log_change(name, health.detail if not checks[name]["up"] else "")
        startup = services.startups.get(name)
        if startup is not None:
            # Not "down": runs are accepted and wait for it; but an operator sees it coming.
            checks[name]["startup"] = startup.as_dict()
    ready = all(check["up"] for check in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


def readiness(health: BackendHealth) -> dict[str, Any]:
    """A backend's check as ``/readyz`` shows it: up or down, a reason word, its workers.

    >>> readiness(BackendHealth("prefect", up=True, unserved=("default-worker-pool",)))
    {'up': False, 'reason': 'no_worker', 'workers': None}
    """
    check: dict[str, Any] = {"up": health.up and not health.unserved}
    if not health.up:
        check["reason"] = "unreachable"
    elif health.unserved:
        check["reason"] = "no_worker"
    check["workers"] = health.workers
    return check


def _log_change(check: str, problem: str) -> None:
    """Log a check's problem when it differs from what was logged last (and its end)."""
    with _log_lock:
        before = _last_logged.get(check, "")
        if problem == before:
            return
        _last_logged[check] = problem
    if problem:
        log.warning("readiness: %s is not ready: %s", check, problem)
    else:
        log.info("readiness: %s is ready again", check)
