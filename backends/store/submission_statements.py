"""A submission's two writes on PostgreSQL, one statement each.

A run is written before its backend hears of it (``pending``, so a crash in
between leaves a record the reconciler resubmits) and marked ``queued`` once
the backend accepted it. Statement by statement, those two writes took a dozen
round trips and two BEGIN/COMMIT pairs; here each is a single statement of
data-modifying CTEs, run in autocommit, so each is one round trip and one
transaction. The statements do what :meth:`Store.create_run` and
:meth:`Store.mark_submitted` do on SQLite, which stays the reference; the
store tests run both.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, text

from backends.model.workflow import RunPlan
from backends.store.models import NodeRun, Run
from backends.store.plans import plan_to_document
from backends.store.transactions import autocommit
from backends.store.views import Route, RunView, ordered_node_views, run_view

__all__ = ["create_run_statement", "mark_submitted_statement"]

_CREATE_RUN = text(
    """
WITH run AS (
    INSERT INTO runs (
        job_run_id, workflow_id, workspace_id, folder_id, job_id, from_job, backend, status,
        plan, created_at, updated_at, submit_claimed_at, route_rule, route_version,
        route_reason, shadow_of
    ) VALUES (
        :job_run_id, :workflow_id, :workspace_id, :folder_id, :job_id, :from_job, :backend,
        'pending', CAST(:plan AS json), :now, :now, :now, :route_rule, :route_version,
        :route_reason, :shadow_of
    )
    ON CONFLICT DO NOTHING
    RETURNING job_run_id
), nodes AS (
    INSERT INTO node_runs (job_run_id, node_id, node_type, status, attempts, max_attempts)
    SELECT run.job_run_id, n.node_id, n.node_type, 'pending', 0, n.max_attempts
      FROM run, json_to_recordset(CAST(:nodes AS json))
           AS n(node_id text, node_type text, max_attempts integer)
), journal AS (
    INSERT INTO transitions (job_run_id, node_id, attempt, status, at)
    SELECT job_run_id, '', 0, 'pending', :now FROM run
)
SELECT count(*) FROM run
"""
)

# One statement sees the tables as they were when it began: the nodes it moves come
# back from the UPDATE itself, the others from the table.
_MARK_SUBMITTED = text(
    """
WITH before AS (
    SELECT status FROM runs WHERE job_run_id = :job_run_id FOR UPDATE
), run AS (
    UPDATE runs SET
        submitted_at = coalesce(runs.submitted_at, :now),
        error = NULL,
        status = CASE WHEN before.status = 'pending' THEN 'queued' ELSE runs.status END,
        updated_at = CASE WHEN before.status = 'pending' THEN :now ELSE runs.updated_at END
      FROM before
     WHERE runs.job_run_id = :job_run_id
    RETURNING runs.*, before.status AS status_before
), queued AS (
    -- Not killed meanwhile: a worker may have started some nodes already; the others
    -- are queued now.
    UPDATE node_runs SET status = 'queued'
      FROM run
     WHERE node_runs.job_run_id = run.job_run_id AND node_runs.status = 'pending'
       AND run.status_before IN ('pending', 'running')
    RETURNING node_runs.*
), journal AS (
    -- One INSERT, so the run's row comes before its nodes' in the journal (as the live
    -- feed shows them): separate CTEs run in no promised order.
    INSERT INTO transitions (job_run_id, node_id, attempt, status, at)
    SELECT job_run_id, '', 0, 'queued', :now FROM run WHERE status_before = 'pending'
    UNION ALL
    SELECT job_run_id, node_id, 0, 'queued', :now FROM queued
    ON CONFLICT DO NOTHING
), nodes AS (
    SELECT * FROM queued
    UNION ALL
    SELECT * FROM node_runs
     WHERE job_run_id = :job_run_id AND node_id NOT IN (SELECT node_id FROM queued)
)
SELECT row_to_json(run) AS run, (SELECT coalesce(json_agg(nodes), '[]') FROM nodes) AS nodes
  FROM run
"""
)

_RUN_TIMES = ("created_at", "submitted_at", "started_at", "finished_at")
_NODE_TIMES = ("started_at", "finished_at")


def create_run_statement(
    engine: Engine,
    *,
    plan: RunPlan,
    backend: str,
    from_job: str | None,
    route: Route | None,
    shadow_of: str | None,
    workspace_id: str | None,
    folder_id: str | None,
    now: datetime,
) -> bool:
    """Record a new pending run with its nodes and first journal row; False if it exists."""
    nodes = [
        {"node_id": node_id, "node_type": spec.type, "max_attempts": spec.retries + 1}
        for node_id, spec in plan.nodes.items()
    ]
    with autocommit(engine) as connection:
        created = connection.execute(
            _CREATE_RUN,
            {
                "job_run_id": plan.job_run_id,
                "workflow_id": plan.workflow_id,
                "workspace_id": workspace_id or plan.workspace_id,
                "folder_id": folder_id or plan.folder_id,
                "job_id": plan.job_id,
                "from_job": from_job,
                "backend": backend,
                "plan": json.dumps(plan_to_document(plan)),
                "now": now,
                "route_rule": route.rule if route else None,
                "route_version": route.version if route else None,
                "route_reason": route.reason if route else None,
                "shadow_of": shadow_of,
                "nodes": json.dumps(nodes),
            },
        ).scalar_one()
    return bool(created)


def mark_submitted_statement(engine: Engine, *, job_run_id: str, now: datetime) -> RunView | None:
    """Mark the run accepted by its backend; the run as it is now (None: no such run)."""
    with autocommit(engine) as connection:
        row = connection.execute(_MARK_SUBMITTED, {"job_run_id": job_run_id, "now": now}).first()
    if row is None:
        return None
    run = _with_times(row.run, _RUN_TIMES)
    nodes = [_with_times(node, _NODE_TIMES) for node in row.nodes]
    # The JSON rows carry the mapped rows' attribute names: the same mappers read them.
    node_rows = [cast(NodeRun, _Row(node)) for node in nodes]
    return run_view(cast(Run, _Row(run)), ordered_node_views(run["plan"], node_rows))


class _Row:
    """A row read as JSON, with attribute access like a mapped row."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _with_times(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return values
