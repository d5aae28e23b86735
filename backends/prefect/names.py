"""Names figway uses on the Prefect side: flow, deployments, work pools and tags."""

from __future__ import annotations

from backends.model.workflow import RunPlan

__all__ = [
    "FLOW_ENTRYPOINT",
    "FLOW_NAME",
    "POOL_CONCURRENCY",
    "deployment_name",
    "run_tags",
    "work_pool_name",
]

#: The flow every figway run is a run of.
FLOW_NAME = "figway-run"
#: A module path, not a file path: workers import figway as an installed package, so
#: deployments need no source storage and no pull steps.
FLOW_ENTRYPOINT = "backends.prefect.flow.figway_run"
#: Concurrency limit of each figway pool's Prefect work pool (flow runs at once).
POOL_CONCURRENCY = {"default": 10, "postgres": 5, "priority": 3}


def work_pool_name(pool: str) -> str:
    """The Prefect work pool of a figway pool.

    >>> work_pool_name("postgres")
    'postgres-worker-pool'
    """
    return f"{pool}-worker-pool"


def deployment_name(pool: str) -> str:
    """The deployment (of :data:`FLOW_NAME`) that runs a pool's runs."""
    return f"figway-{pool}"


def run_tags(plan: RunPlan) -> list[str]:
    """Tags that let the Prefect UI filter figway's flow runs."""
    return [
        "figway",
        f"workflow:{plan.workflow_id}",
        f"workspace:{plan.workspace_id}",
        f"folder:{plan.folder_id}",
    ]
