"""Part (d) of the RQ path: figway's hot path on a database that already holds many finished runs.

The same figures twice in one run, on the same stack: first on the empty
database, then after ``--scale-runs`` finished runs were written into it:

- submission: p50 of ``POST /workflow_runs/`` (the small DAG, no worker
  running), beside the baseline's;
- node in-job time: the mean time a noop node of the chain of 20 spends inside
  its RQ job (forking workers), median over the runs.

The seed copies one finished run of the small DAG, made through figway just
before, N times on the server (``INSERT ... SELECT ... FROM generate_series``,
one statement per table and batch): its run row, node rows, journal
(transitions) and log lines, so the proportions are figway's own. The copies'
times are spread over the 90 days before the run, then the tables are
vacuumed and analysed (as autovacuum would). Last, ``EXPLAIN (ANALYZE,
BUFFERS)`` of the hot statements on the full tables, and of the statements
inside ``figway_node_transition()`` (through ``auto_explain``), with every
sequential scan of a large table named.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from backends.store.metric_records import END_COUNTED
from bench.endtoend import EndToEndRunner
from bench.harness import BASELINE, FIGWAY, say
from bench.stack import BenchStack
from bench.submit import SubmitTarget, measure_latency, submitter_factories
from bench.workflows import BenchDag

if TYPE_CHECKING:
    from bench.harness import BenchPath

__all__ = ["HOT_STATEMENTS", "explain_hot_statements", "part_scale", "seed_runs"]

#: The tables a finished run has rows in, in the order they are filled (foreign keys).
RUN_TABLES = ("runs", "node_runs", "transitions", "log_lines")
#: Rows per seeding statement: large enough to be server-bound, small enough to report progress.
SEED_BATCH = 100_000
#: How far back the seeded runs reach.
SEED_SPAN = timedelta(days=90)
#: Workflows and jobs the seeded runs are spread over.
SEED_WORKFLOWS = 100
SEED_JOBS = 1_000
#: Log lines per seeded node when the template's nodes wrote none.
LOG_LINES_PER_NODE = 3
SEED_LOG_LINES = f"""
INSERT INTO log_lines (job_run_id, node_id, attempt, at, level, message)
SELECT 'seed-' || g, n.node_id, 1,
       n.finished_at - g * %(step)s * interval '1 second',
       'INFO', 'seeded line ' || k || ' of node ' || n.node_id || ': ' || md5(g::text || k::text)
FROM node_runs n, generate_series(%(first)s::bigint, %(last)s::bigint) g,
     generate_series(1, {LOG_LINES_PER_NODE}) k
WHERE n.job_run_id = %(template)s
"""
#: A table this large read by a sequential scan is a finding.
LARGE_TABLE_ROWS = 10_000

#: The store's hot and periodic statements, as PostgreSQL receives them (backends/store/runs.py,
#: journal.py, metric_records.py, artifact_records.py, routing_records.py); %(run)s,
#: %(node)s and %(workflow)s are a seeded run, one of its nodes and its workflow.
HOT_STATEMENTS: dict[str, str] = {
    "run by job_run_id (get_run, load_plan, run_status)": (
        "SELECT * FROM runs WHERE job_run_id = %(run)s"
    ),
    "node_runs of a run (node_states, get_run)": (
        "SELECT node_id, status, attempts FROM node_runs WHERE job_run_id = %(run)s"
    ),
    "node_runs by (job_run_id, node_id)": (
        "SELECT status, attempts FROM node_runs WHERE job_run_id = %(run)s AND node_id = %(node)s"
    ),
    "journal of a run after an id (live feed)": (
        "SELECT * FROM transitions WHERE job_run_id = %(run)s AND id > 0 ORDER BY id"
    ),
    "log lines of a run after an id": (
        "SELECT * FROM log_lines WHERE job_run_id = %(run)s AND id > 0 ORDER BY id LIMIT 1000"
    ),
    "stats (GET /stats)": (
        "SELECT workflow_id, backend, status, count(*) FROM runs "
        "GROUP BY workflow_id, backend, status"
    ),
    "stale_nodes (reconciler)": (
        "SELECT n.job_run_id, n.node_id, n.attempts, r.backend FROM node_runs n "
        "JOIN runs r ON r.job_run_id = n.job_run_id "
        "WHERE n.status = 'running' AND n.heartbeat_at < now() - interval '60 seconds' LIMIT 500"
    ),
    "unsubmitted_runs (reconciler)": (
        "SELECT job_run_id FROM runs WHERE status = 'pending' AND shadow_of IS NULL AND "
        "(submit_claimed_at < now() - interval '5 minutes' OR "
        "(submit_claimed_at IS NULL AND updated_at < now() - interval '30 seconds')) "
        "ORDER BY created_at LIMIT 50"
    ),
    "active_runs_without_running_nodes (reconciler)": (
        "SELECT job_run_id, backend FROM runs WHERE status IN ('queued', 'running') "
        "AND updated_at < now() - interval '60 seconds' AND job_run_id NOT IN "
        "(SELECT job_run_id FROM node_runs WHERE status = 'running') "
        "ORDER BY updated_at LIMIT 200"
    ),
    "fold_runs (metrics ledger)": (
        "SELECT * FROM runs WHERE shadow_of IS NULL AND metrics_stage < 2 AND "
        "((metrics_stage = 0 AND submitted_at IS NOT NULL) OR "
        "status IN ('succeeded', 'failed', 'cancelled')) LIMIT 1000 FOR UPDATE SKIP LOCKED"
    ),
    "runs_to_purge (artifact janitor)": (
        "SELECT job_run_id FROM runs WHERE artifacts_purged_at IS NULL "
        "AND finished_at < now() - interval '24 hours' "
        "AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY finished_at LIMIT 500"
    ),
    "recent_runs (console)": (
        "SELECT job_run_id, workflow_id, backend, status, created_at, finished_at, route_rule "
        "FROM runs WHERE shadow_of IS NULL ORDER BY created_at DESC, job_run_id LIMIT 20"
    ),
    "recent_job_ids of a workflow (routing)": (
        "SELECT job_id FROM (SELECT job_id, max(created_at) AS last FROM runs "
        "WHERE workflow_id = %(workflow)s AND shadow_of IS NULL GROUP BY job_id) latest "
        "ORDER BY last DESC LIMIT 1000"
    ),
    "cancelling_runs (reconciler)": (
        "SELECT job_run_id FROM runs WHERE status = 'cancelling' LIMIT 100"
    ),
    "unstarted_shadows (reconciler)": (
        "SELECT job_run_id FROM runs WHERE shadow_of IS NOT NULL AND status = 'pending' "
        "AND submitted_at IS NULL AND created_at < now() - interval '5 minutes' LIMIT 100"
    ),
}


# -- seeding -----------------------------------------------------------------------------


def _copy_query(connection: psycopg.Connection[Any], table: str) -> sql.Composed:
    """``INSERT INTO table SELECT <the template's row, renamed and moved back in time>``.

    Every column but a serial ``id`` is copied from the template run's rows;
    ``job_run_id`` becomes ``seed-<g>``, the workflow and job ids take one of
    :data:`SEED_WORKFLOWS` and :data:`SEED_JOBS` suffixes, every timestamp moves back by
    ``g * %(step)s`` seconds; the runs are counted in the metrics and their
    artifacts purged, as a long-running gateway's old runs are.
    """
    columns = connection.execute(
        "SELECT column_name, data_type, column_default FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    for name, data_type, default in columns:
        if default is not None and str(default).startswith("nextval("):
            continue
        column = sql.Identifier(name)
        names.append(column)
        if name == "job_run_id":
            values.append(sql.SQL("'seed-' || g"))
        elif name == "workflow_id":
            # Spread over SEED_WORKFLOWS workflows and SEED_JOBS jobs, as a real history is:
            # a query for one workflow's runs is then as selective as it would be.
            values.append(
                sql.SQL("t.workflow_id || '-s' || (g %% {})").format(sql.Literal(SEED_WORKFLOWS))
            )
        elif name == "job_id":
            values.append(sql.SQL("t.job_id || '-' || (g %% {})").format(sql.Literal(SEED_JOBS)))
        elif name == "metrics_stage":
            # Counted long ago, as on a gateway that has run for months: the metrics
            # folder must not spend the measurement counting the seed.
            values.append(sql.Literal(END_COUNTED))
        elif name == "artifacts_purged_at":
            # Purged at the end of their retention: the artifact janitor has nothing to do.
            values.append(sql.SQL("t.finished_at - g * %(step)s * interval '1 second'"))
        elif data_type.startswith("timestamp"):
            values.append(sql.SQL("t.{} - g * %(step)s * interval '1 second'").format(column))
        else:
            values.append(sql.SQL("t.{}").format(column))
    return sql.SQL(
        "INSERT INTO {table} ({names}) SELECT {values} FROM {table} t, "
        "generate_series(%(first)s::bigint, %(last)s::bigint) g WHERE t.job_run_id = %(template)s"
    ).format(
        table=sql.Identifier(table),
        names=sql.SQL(", ").join(names),
        values=sql.SQL(", ").join(values),
    )


def seed_runs(database_url: str, template: str, count: int) -> dict[str, Any]:
    """``count`` copies of the finished run ``template`` with its nodes, journal and logs."""
    step = SEED_SPAN.total_seconds() / count
    began = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as connection:
        per_run = {
            table: connection.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE job_run_id = %s").format(
                    sql.Identifier(table)
                ),
                (template,),
            ).fetchone()[0]  # type: ignore[index]
            for table in RUN_TABLES
        }
        queries: dict[str, sql.SQL | sql.Composed] = {
            table: _copy_query(connection, table) for table in RUN_TABLES
        }
        # Copies of a consistent run are consistent: no foreign key needs checking, and the
        # journal's trigger must not wake the gateway's live feed once per seeded run.
        connection.execute("SET session_replication_role = replica")
        if not per_run["log_lines"]:
            # noop nodes write no log lines; real nodes write a few (the ETL nodes a summary
            # line each, failures a traceback): give every seeded node some.
            queries["log_lines"] = sql.SQL(SEED_LOG_LINES)
            per_run["log_lines"] = per_run["node_runs"] * LOG_LINES_PER_NODE
        for first in range(1, count + 1, SEED_BATCH):
            last = min(count, first + SEED_BATCH - 1)
            params = {"first": first, "last": last, "step": step, "template": template}
            with connection.transaction():
                for table in RUN_TABLES:
                    connection.execute(queries[table], params)
            say(f"  seeded {last:,} of {count:,} runs ({time.perf_counter() - began:.0f} s)")
        inserted = time.perf_counter() - began
        for table in RUN_TABLES:
            connection.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        sizes = {
            table: {
                "rows": connection.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()[0],  # type: ignore[index]
                "mb": connection.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[
                    0
                ]  # type: ignore[index]
                / 10**6,
            }
            for table in RUN_TABLES
        }
    total = time.perf_counter() - began
    return {
        "runs": count,
        "template": template,
        "rows_per_run": per_run,
        "insert_seconds": inserted,
        "vacuum_analyze_seconds": total - inserted,
        "runs_per_second": count / inserted,
        "tables": sizes,
    }


# -- EXPLAIN -----------------------------------------------------------------------------


def _seq_scans(plan: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """The large tables a plan reads by a sequential scan."""
    found = []
    if plan.get("Node Type") == "Seq Scan":
        relation = plan.get("Relation Name", "")
        if sizes.get(relation, 0) >= LARGE_TABLE_ROWS:
            found.append(relation)
    for child in plan.get("Plans", []):
        found += _seq_scans(child, sizes)
    return found


def explain_hot_statements(
    database_url: str, run: str, node: str, workflow: str, sizes: dict[str, int]
) -> list[dict[str, Any]]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of every hot statement; the seq scans of large tables."""
    found = []
    with psycopg.connect(database_url, autocommit=True) as connection:
        for name, statement in HOT_STATEMENTS.items():
            params = {"run": run, "node": node, "workflow": workflow}
            (document,) = connection.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement,
                params,
            ).fetchone()  # type: ignore[misc]
            text = "\n".join(
                row[0]
                for row in connection.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement,
                    params,
                )
            )
            top = document[0]
            found.append(
                {
                    "statement": name,
                    "sql": statement,
                    "execution_ms": top["Execution Time"],
                    "seq_scans": _seq_scans(top["Plan"], sizes),
                    "plan": text,
                }
            )
    return found


def explain_node_transition(
    database_url: str, run: str, node: str, sizes: dict[str, int]
) -> list[dict[str, Any]]:
    """The statements inside ``figway_node_transition()``, as ``auto_explain`` plans them.

    Moves ``node`` of the queued run ``run`` to running and then to succeeded
    through figway's own call, on a connection whose nested statements are
    explained (``auto_explain.log_nested_statements``) and sent to the client.
    """
    from sqlalchemy import event

    from backends.model.status import NodeStatus
    from backends.store import create_database_engine
    from backends.store.node_transition_call import call_node_transition
    from backends.store.transactions import utcnow

    messages: list[str] = []
    engine = create_database_engine(database_url)

    @event.listens_for(engine, "connect")
    def explain_everything(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(
            lambda notice: messages.append(notice.message_primary or "")
        )
        cursor = dbapi_connection.cursor()
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_buffers = on",
            "SET auto_explain.log_nested_statements = on",
            "SET client_min_messages = log",
        ):
            cursor.execute(setting)
        cursor.close()
        dbapi_connection.commit()

    try:
        for status in (NodeStatus.RUNNING, NodeStatus.SUCCEEDED):
            call_node_transition(
                engine,
                job_run_id=run,
                node_id=node,
                attempt=1,
                status=status,
                now=utcnow(),
                starting=status is NodeStatus.RUNNING,
            )
    finally:
        engine.dispose()
    return [
        {"plan": message, "seq_scans": _seq_scans_in_text(message, sizes)}
        for message in messages
        if "Query Text" in message
    ]


def _seq_scans_in_text(plan: str, sizes: dict[str, int]) -> list[str]:
    scanned = [
        line.split("Seq Scan on ", 1)[1].split()[0]
        for line in plan.splitlines()
        if "Seq Scan on " in line
    ]
    return [table for table in scanned if sizes.get(table, 0) >= LARGE_TABLE_ROWS]


# -- the part ----------------------------------------------------------------------------


def _measure(
    stack: BenchStack, args: argparse.Namespace, submit_dag: BenchDag, chain_dag: BenchDag
) -> dict[str, Any]:
    """Submission p50 with no worker running, then the chain's in-job time on forking workers."""
    target = SubmitTarget(stack.api_url, stack.database_url, stack.redis_url, submit_dag)
    latency = {
        result.name: result
        for result in measure_latency(
            target,
            [FIGWAY, BASELINE],
            requests=args.requests,
            warmup=args.warmup,
            progress=say,
            factories=submitter_factories(),
        )
    }
    # The submitted runs stay queued in the database (as a gateway's backlog would); their
    # jobs are dropped so the workers run only the chain.
    stack.redis.flushdb()
    stack.start_workers(args.workers, simple=False)
    runner = EndToEndRunner(stack.api_url, stack.redis, "fork")
    try:
        runner.run("figway", chain_dag, 0)  # warm-up
        in_job = [
            runner.run("figway", chain_dag, repeat).in_job_mean_ms
            for repeat in range(1, max(3, args.repeats) + 1)
        ]
    finally:
        runner.close()
        stack.stop_workers()
    figures = {
        "submit_p50_ms": latency[FIGWAY].summary.p50,
        "baseline_p50_ms": latency[BASELINE].summary.p50,
        "in_job_ms": statistics.median(in_job),
        "in_job_samples_ms": in_job,
    }
    say(
        f"  submit p50 {figures['submit_p50_ms']:.2f} ms (baseline "
        f"{figures['baseline_p50_ms']:.2f} ms), in-job {figures['in_job_ms']:.1f} ms per node"
    )
    return figures


def _template_run(stack: BenchStack, args: argparse.Namespace, dag: BenchDag) -> tuple[str, str]:
    """One finished run of ``dag`` through figway: the seed's model. (run id, a node id)."""
    stack.start_workers(1, simple=False)
    runner = EndToEndRunner(stack.api_url, stack.redis, "fork")
    try:
        runner.run("figway", dag, 0)
    finally:
        runner.close()
        stack.stop_workers()
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            "SELECT job_run_id FROM runs WHERE workflow_id = %s AND status = 'succeeded' "
            "ORDER BY finished_at DESC LIMIT 1",
            (dag.workflow_id,),
        ).fetchone()
    if row is None:
        raise RuntimeError("the template run did not finish")
    return row[0], dag.level_order()[0]


def _queued_run(stack: BenchStack, dag: BenchDag) -> str:
    """A run submitted with no worker running: its first node is for the transition's EXPLAIN."""
    import httpx

    from bench.submit import run_body

    with httpx.Client(base_url=stack.api_url, timeout=30.0) as client:
        response = client.post("/workflow_runs/", json=run_body(dag))
        response.raise_for_status()
        run_id: str = response.json()["job_run_id"]
    stack.redis.flushdb()
    return run_id


def part_scale(
    path: BenchPath, stack: BenchStack, args: argparse.Namespace, dags: Sequence[BenchDag]
) -> dict[str, Any]:
    """(d): the figures on the empty database, then with ``--scale-runs`` finished runs."""
    submit_dag, chain_dag, _ = dags
    say("(d) scale: the empty database")
    empty = _measure(stack, args, submit_dag, chain_dag)
    template, node = _template_run(stack, args, submit_dag)
    say(f"(d) scale: seeding {args.scale_runs:,} finished runs like {template}")
    seeded = seed_runs(stack.database_url, template, args.scale_runs)
    say(
        f"  {seeded['runs_per_second']:,.0f} runs/s; insert {seeded['insert_seconds']:.0f} s, "
        f"vacuum+analyze {seeded['vacuum_analyze_seconds']:.0f} s; "
        + ", ".join(f"{t} {v['rows']:,} rows {v['mb']:.0f} MB" for t, v in seeded["tables"].items())
    )
    say(f"(d) scale: {args.scale_runs:,} finished runs in the database")
    full = _measure(stack, args, submit_dag, chain_dag)
    sizes = {table: figures["rows"] for table, figures in seeded["tables"].items()}
    say("(d) scale: EXPLAIN (ANALYZE, BUFFERS) of the hot statements")
    explained = explain_hot_statements(
        stack.database_url,
        f"seed-{args.scale_runs // 2}",
        node,
        f"{submit_dag.workflow_id}-s{args.scale_runs // 2 % SEED_WORKFLOWS}",
        sizes,
    )
    queued = _queued_run(stack, submit_dag)
    try:
        transition = explain_node_transition(stack.database_url, queued, node, sizes)
    except Exception as exc:  # the function arrives with migration 0010; say so, go on
        transition = [{"plan": f"not explained: {exc}", "seq_scans": []}]
    for item in [*explained, *transition]:
        label = item.get("statement", "figway_node_transition: nested statement")
        scans = ", ".join(item["seq_scans"]) or "none"
        say(f"  {label}: seq scans of large tables: {scans}")
    targets = [
        {
            "figure": figure,
            "runs": args.scale_runs,
            "empty": empty[key],
            "seeded": full[key],
            "ratio": full[key] / empty[key],
        }
        for figure, key in (("submission p50", "submit_p50_ms"), ("node in-job time", "in_job_ms"))
    ]
    return {
        "scale": {
            "empty": empty,
            "seeded": full,
            "seed": seeded,
            "explain": explained,
            "explain_node_transition": transition,
        },
        "targets": {"scale": targets},
    }
