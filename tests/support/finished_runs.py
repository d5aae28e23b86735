"""Finished runs recorded as the gateway records them, with chosen outcomes and times.

The judge needs tens or hundreds of finished runs a side; running them for real
would take minutes and prove nothing more about the judge. These helpers write
each run with ``Store.create_run`` (with its route, as the dispatcher does), then
give it its outcome and its moments (accepted, first node running, finished), so
guards, promotion and the comparison read the same rows they read in production.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, update

from backends.model.status import RunStatus
from backends.model.workflow import RunPlan
from backends.store import Store
from backends.store.models import Run
from backends.store.views import Route
from tests.support.plans import one_node_workflow

__all__ = ["record_runs"]


def record_runs(
    store: Store,
    *,
    backend: str,
    count: int,
    failed: int = 0,
    seconds: float = 10.0,
    wait: float = 1.0,
    rule: str | None = "canary",
    workflow_id: str = "etl",
    accepted_from: datetime | None = None,
    every: timedelta = timedelta(milliseconds=10),
    spread: float = 0.05,
) -> list[str]:
    """``count`` finished client runs of ``workflow_id`` on ``backend``, routed by ``rule``.

    The first ``failed`` of them failed; each waited about ``wait`` seconds for its
    first node and ran about ``seconds`` (times vary by up to ``spread``, the same way
    on every call, so two calls with the same figures describe identical backends).
    They are accepted ``every`` apart (10 ms) from ``accepted_from`` (now by default),
    so runs recorded after a rollout's step began count at that step.
    """
    definition = one_node_workflow(workflow_id)
    start = accepted_from or datetime.now(UTC)
    batch = uuid.uuid4().hex[:12]
    rows = []
    ids = []
    for index in range(count):
        job_run_id = f"judged-{batch}-{index}-{backend}"
        plan = RunPlan.from_definition(definition, job_run_id=job_run_id, job_id=job_run_id)
        route = Route(rule, "v1", "test")
        assert store.create_run(plan=plan, backend=backend, from_job=None, route=route)
        wobble = 1 + spread * math.sin(index * 1.7)
        submitted = start + every * index
        started = submitted + timedelta(seconds=wait * wobble)
        finished = started + timedelta(seconds=seconds * wobble)
        rows.append(
            {
                "key": job_run_id,
                "status": (RunStatus.FAILED if index < failed else RunStatus.SUCCEEDED).value,
                "created": submitted,
                "submitted": submitted,
                "started": started,
                "finished": finished,
            }
        )
        ids.append(job_run_id)
    if rows:
        with store.engine.begin() as connection:
            connection.execute(
                update(Run)
                .where(Run.job_run_id == bindparam("key"))
                .values(
                    status=bindparam("status"),
                    created_at=bindparam("created"),
                    submitted_at=bindparam("submitted"),
                    started_at=bindparam("started"),
                    finished_at=bindparam("finished"),
                ),
                rows,
            )
    return ids
