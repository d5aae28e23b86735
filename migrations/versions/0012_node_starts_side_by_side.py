"""figway_node_transition(): one run's nodes start side by side, each reading its parents once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Found on the Prefect path's 20x10 DAG (``python -m bench.prefect_path``), where ten
nodes of a level start and end at once in one flow-run process:

- starting a node of a 200-node run took about 150 ms in the database, against 13 ms
  on a chain. The plan is a ``json`` column, parsed whole on every read, and 0010's
  function read the node's parents inside two queries, where PostgreSQL's plan re-read
  them once per node row of the run: 190 parses of a 44 KB document, twice. This
  version reads them into an array once;
- every transition locked the run's row alone and wrote it, so a level's starts
  queued behind each other. Starts of a running run now share the lock and leave the
  row alone (a running node already keeps its run out of the silence window); ends
  still take it one at a time, as deciding what is ready and whether the run ended
  needs.

Every other line is 0010's function; the one-statement parity test
(``tests/store/test_one_statement_parity.py``) holds both to the SQLite path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_FUNCTION = r"""
CREATE OR REPLACE FUNCTION figway_node_transition(
    p_run text,
    p_node text,
    p_attempt integer,
    p_status text,
    p_now timestamptz,
    p_error text,
    p_output json,
    p_logs json,
    p_allowed_from text[],
    p_node_terminal text[],
    p_node_unfinished text[],
    p_run_terminal text[],
    p_starting boolean
) RETURNS json
LANGUAGE plpgsql
AS $$
DECLARE
    v_run_status text;
    v_plan json;
    v_upstream text[];
    v_current text;
    v_attempts integer;
    v_outputs json := '{}';
    v_skipped text[] := '{}';
    v_ready text[] := '{}';
    v_reason text;
    v_final text;
    v_failed integer;
    v_refused json;
BEGIN
    -- Starts of one run's nodes share the run's lock: they change nothing of the run
    -- once it is running, so a level's nodes start side by side. Every other move takes
    -- it alone (ends decide what is ready and whether the run ended, one at a time).
    -- NO KEY UPDATE, not UPDATE: the key is never changed, and the journal's and log
    -- lines' foreign-key checks need not wait on it.
    IF p_starting AND (SELECT status FROM runs WHERE job_run_id = p_run) = 'running' THEN
        SELECT status, plan INTO v_run_status, v_plan
          FROM runs WHERE job_run_id = p_run FOR SHARE;
    ELSE
        SELECT status, plan INTO v_run_status, v_plan
          FROM runs WHERE job_run_id = p_run FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no run %', quote_literal(p_run) USING ERRCODE = 'P0002';
    END IF;

    -- The attempt's log lines are kept whatever happens to the transition.
    INSERT INTO log_lines (job_run_id, node_id, attempt, at, level, message)
    SELECT r.job_run_id, r.node_id, r.attempt, r.at, r.level, r.message
      FROM json_to_recordset(p_logs) AS r(
          job_run_id text, node_id text, attempt integer, at timestamptz,
          level text, message text);

    SELECT status, attempts INTO v_current, v_attempts
      FROM node_runs WHERE job_run_id = p_run AND node_id = p_node;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no node %', quote_literal(p_run), quote_literal(p_node)
            USING ERRCODE = 'P0002';
    END IF;
    v_refused := json_build_object(
        'applied', false, 'node_status', v_current, 'run_status', v_run_status);

    IF p_starting THEN
        -- The node's parents, read out of the plan once: a json plan is parsed whole on
        -- every read, and a read inside the queries below ran once per row of the run.
        v_upstream := ARRAY(SELECT json_array_elements_text(v_plan -> 'upstream' -> p_node));
        -- A job released early (a duplicate delivery) never runs on missing inputs.
        IF EXISTS (
            SELECT 1 FROM node_runs
             WHERE job_run_id = p_run AND status <> 'succeeded'
               AND node_id = ANY (v_upstream)
        ) THEN
            RETURN v_refused;
        END IF;
        SELECT coalesce(json_object_agg(node_id, output), '{}') INTO v_outputs
          FROM node_runs
         WHERE job_run_id = p_run AND node_id = ANY (v_upstream);
    END IF;

    IF NOT (v_current = ANY (p_allowed_from)) THEN
        RETURN v_refused;
    END IF;
    IF p_status = 'running'
       AND (v_run_status NOT IN ('pending', 'queued', 'running') OR p_attempt < v_attempts) THEN
        RETURN v_refused;  -- killed meanwhile, or a stale redelivery of an older attempt
    END IF;
    INSERT INTO transitions (job_run_id, node_id, attempt, status, at, error)
    VALUES (p_run, p_node, p_attempt, p_status, p_now, p_error)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN v_refused;  -- this very move was recorded already
    END IF;
    IF p_status = 'running' AND v_current = 'running' THEN
        -- A new attempt while the last one never reported: its worker died.
        INSERT INTO transitions (job_run_id, node_id, attempt, status, at, error)
        VALUES (p_run, p_node, v_attempts, 'retrying', p_now,
                format('attempt %s ended without a report (its worker was lost)', v_attempts))
        ON CONFLICT DO NOTHING;
    END IF;

    UPDATE node_runs SET
        status = p_status,
        attempts = greatest(v_attempts, p_attempt),
        error = CASE WHEN p_error IS NOT NULL OR p_status = 'succeeded' THEN p_error ELSE error END,
        started_at = CASE WHEN p_status = 'running' THEN coalesce(started_at, p_now) ELSE started_at END,
        heartbeat_at = CASE WHEN p_status = 'running' THEN p_now ELSE heartbeat_at END,
        output = CASE WHEN p_status = 'succeeded' THEN p_output ELSE output END,
        finished_at = CASE WHEN p_status = ANY (p_node_terminal) THEN p_now ELSE finished_at END
     WHERE job_run_id = p_run AND node_id = p_node;

    IF p_status = 'running' AND v_run_status IN ('pending', 'queued') THEN
        v_run_status := 'running';
        UPDATE runs SET status = v_run_status, updated_at = p_now,
                        started_at = coalesce(started_at, p_now)
         WHERE job_run_id = p_run;
        INSERT INTO transitions (job_run_id, node_id, attempt, status, at)
        VALUES (p_run, '', 0, v_run_status, p_now) ON CONFLICT DO NOTHING;
    ELSIF p_status <> 'running' THEN
        -- A node starting is no news for the silence window (it reads runs with no node
        -- running), and a start holds the run's lock shared: it must not write the run.
        UPDATE runs SET updated_at = p_now WHERE job_run_id = p_run;
    END IF;

    IF p_status = 'failed' THEN
        v_reason := format('upstream node %s failed', quote_literal(p_node));
        WITH RECURSIVE edges AS (
            SELECT e.key AS child, u.parent
              FROM json_each(v_plan -> 'upstream') AS e,
                   json_array_elements_text(e.value) AS u(parent)
        ), downstream(node_id) AS (
            SELECT child FROM edges WHERE parent = p_node
            UNION
            SELECT edges.child FROM edges JOIN downstream ON edges.parent = downstream.node_id
        ), journaled AS (
            INSERT INTO transitions (job_run_id, node_id, attempt, status, at, error)
            SELECT p_run, n.node_id, n.attempts, 'skipped', p_now, v_reason
              FROM node_runs AS n
             WHERE n.job_run_id = p_run AND n.status = ANY (p_node_unfinished)
               AND n.node_id IN (SELECT node_id FROM downstream)
            ON CONFLICT DO NOTHING
            RETURNING node_id
        ), moved AS (
            UPDATE node_runs SET status = 'skipped', error = v_reason, finished_at = p_now
             WHERE job_run_id = p_run AND node_id IN (SELECT node_id FROM journaled)
            RETURNING node_id
        )
        SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') INTO v_skipped FROM moved;
    END IF;

    IF p_status = 'succeeded' THEN
        -- Children whose every parent has succeeded and that have not started: the run
        -- row is locked, so exactly one transition names each (whoever releases it).
        WITH edges AS (
            SELECT e.key AS child, u.parent
              FROM json_each(v_plan -> 'upstream') AS e,
                   json_array_elements_text(e.value) AS u(parent)
        ), children AS (
            SELECT DISTINCT child FROM edges WHERE parent = p_node
        )
        SELECT coalesce(array_agg(c.child ORDER BY c.child), '{}') INTO v_ready
          FROM children AS c
          JOIN node_runs AS n ON n.job_run_id = p_run AND n.node_id = c.child
         WHERE n.status IN ('pending', 'queued')
           AND NOT EXISTS (
               SELECT 1 FROM edges AS e
                 JOIN node_runs AS p ON p.job_run_id = p_run AND p.node_id = e.parent
                WHERE e.child = c.child AND p.status <> 'succeeded'
           );
    END IF;

    IF p_status = ANY (p_node_terminal) AND NOT (v_run_status = ANY (p_run_terminal))
       AND NOT EXISTS (
           SELECT 1 FROM node_runs
            WHERE job_run_id = p_run AND NOT (status = ANY (p_node_terminal))
       ) THEN
        -- Every node has ended: so has the run (as _final_run_status decides on SQLite).
        SELECT CASE
                   WHEN v_run_status = 'cancelling' OR bool_or(status = 'cancelled') THEN 'cancelled'
                   WHEN bool_or(status IN ('failed', 'skipped')) THEN 'failed'
                   ELSE 'succeeded'
               END,
               count(*) FILTER (WHERE status = 'failed')
          INTO v_final, v_failed
          FROM node_runs WHERE job_run_id = p_run;
        v_run_status := v_final;
        UPDATE runs SET status = v_final, updated_at = p_now, finished_at = p_now,
                        error = CASE WHEN v_final = 'failed'
                                     THEN format('%s node(s) failed', v_failed) ELSE error END
         WHERE job_run_id = p_run;
        INSERT INTO transitions (job_run_id, node_id, attempt, status, at)
        VALUES (p_run, '', 0, v_final, p_now) ON CONFLICT DO NOTHING;
    END IF;

    RETURN json_build_object(
        'applied', true, 'node_status', p_status, 'run_status', v_run_status,
        'skipped', v_skipped, 'ready', v_ready,
        'plan', CASE WHEN p_starting THEN v_plan END,
        'upstream_outputs', v_outputs);
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_previous_function())


def _previous_function() -> str:
    """0010's text of the function, read from that migration."""
    path = Path(__file__).with_name("0010_node_transition_function.py")
    spec = importlib.util.spec_from_file_location("figway_migration_0010", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module._FUNCTION
    return text
