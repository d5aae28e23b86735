"""``figway setup prefect``: the work pools and deployments the gateway submits to.

Idempotent: it creates what is missing, corrects what differs (a pool's
concurrency limit, a deployment's entrypoint or pool) and reports the rest as
unchanged, so running it twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from backends.prefect.names import (
    FLOW_ENTRYPOINT,
    FLOW_NAME,
    POOL_CONCURRENCY,
    deployment_name,
    work_pool_name,
)

__all__ = ["SetupChange", "ensure_prefect_setup"]


@dataclass(frozen=True)
class SetupChange:
    kind: str  # "work pool" or "deployment"
    name: str
    action: str  # "created", "updated" or "unchanged"
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}: {self.action}{detail}"


def ensure_prefect_setup(client: SyncPrefectClient) -> list[SetupChange]:
    """Make the Prefect server hold figway's work pools and deployments."""
    changes = [_ensure_pool(client, pool, limit) for pool, limit in POOL_CONCURRENCY.items()]
    flow_id = client.create_flow_from_name(FLOW_NAME)
    changes.extend(_ensure_deployment(client, flow_id, pool) for pool in POOL_CONCURRENCY)
    return changes


def _ensure_pool(client: SyncPrefectClient, pool: str, limit: int) -> SetupChange:
    name = work_pool_name(pool)
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
                concurrency_limit=limit,
                description=f"figway runs of the {pool!r} pool",
            )
        )
        return SetupChange("work pool", name, "created", f"process, concurrency {limit}")
    if existing.concurrency_limit != limit:
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
        return SetupChange(
            "work pool", name, "updated", f"concurrency {existing.concurrency_limit} -> {limit}"
        )
    return SetupChange("work pool", name, "unchanged")


def _ensure_deployment(client: SyncPrefectClient, flow_id: object, pool: str) -> SetupChange:
    name = deployment_name(pool)
    full_name = f"{FLOW_NAME}/{name}"
    try:
        existing = client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        existing = None
    if (
        existing is not None
        and existing.entrypoint == FLOW_ENTRYPOINT
        and existing.work_pool_name == work_pool_name(pool)
    ):
        return SetupChange("deployment", full_name, "unchanged")
    # create_deployment upserts on (flow, name).
    client.create_deployment(
        flow_id=flow_id,  # type: ignore[arg-type]
        name=name,
        entrypoint=FLOW_ENTRYPOINT,
        work_pool_name=work_pool_name(pool),
        parameter_openapi_schema={
            "title": "Parameters",
            "type": "object",
            "properties": {"job_run_id": {"title": "job_run_id", "type": "string"}},
            "required": ["job_run_id"],
        },
        enforce_parameter_schema=True,
        description=f"figway runs of the {pool!r} pool (submitted by the figway gateway)",
        tags=["figway"],
    )
    action = "created" if existing is None else "updated"
    return SetupChange("deployment", full_name, action, f"pool {work_pool_name(pool)}")
