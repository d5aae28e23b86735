"""Part (c): probes that explain part (b), in this process, without RQ.

- ``pg_connect``: opening a PostgreSQL connection (psycopg), which a forked
  work horse pays for every job: figway's engine drops its parent's pool at fork.
- ``node_runtime``: figway's :class:`~backends.runtime.NodeRuntime` running noop
  nodes of a chain and of the 20x10 DAG directly (no RQ, no fork), with its
  store calls timed one by one and its SQL statements counted; then the chain
  again on a new database connection for every node (as a work horse has), and
  once more with every node in a freshly forked child, as a forking RQ worker
  runs it, beside an empty fork for reference.

Runs are created through figway's dispatcher with an executor that submits
nothing, so no RQ job exists for them.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from bench.stats import summarise
from bench.timing import PhaseTimer, StatementCounter
from bench.workflows import FOLDER_ID, WORKSPACE_ID, BenchDag

__all__ = ["node_runtime_probe", "pg_connect_probe"]


def pg_connect_probe(database_url: str, count: int = 20) -> dict[str, Any]:
    """Milliseconds to open and close a PostgreSQL connection."""
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        psycopg.connect(database_url).close()
        samples.append((time.perf_counter() - began) * 1_000)
    return summarise(samples).as_dict()


class _SubmitNothing:
    """An executor that accepts every plan and runs nothing (the probe runs the nodes itself)."""

    name = "rq"

    def submit(self, plan: object) -> None:
        return None


def node_runtime_probe(
    database_url: str, redis_url: str, chain_dag: BenchDag, layered_dag: BenchDag
) -> dict[str, Any]:
    """Per-node cost of figway's node runtime: warm, on new connections, in forked children.

    The chain is run four ways interleaved node by node, so the variants share the
    machine's noise: warm in this process; in this process on a new connection
    for every node; in a freshly forked child per node; and an empty fork for
    reference. The layered DAG runs warm only (its store calls grow with its size).
    """
    # Imported here: the other parts do not need figway's node runtime in this process.
    from backends.nodes import default_registry
    from backends.runtime.attempts import NodeRuntime
    from backends.store import Store, create_database_engine
    from gateway.config import Settings
    from gateway.dispatch.dispatcher import Dispatcher, RunRequest
    from gateway.routing.router import Router
    from gateway.routing.source import builtin_rules

    settings = Settings(database_url=database_url, redis_url=redis_url)
    warm_engine = create_database_engine(database_url)
    fresh_engine = create_database_engine(database_url)
    warm_store = Store(warm_engine)
    node_types = default_registry()
    timer = PhaseTimer()
    counter = StatementCounter(warm_engine)
    dispatcher = Dispatcher(
        store=warm_store,
        executors={"rq": _SubmitNothing()},  # type: ignore[dict-item]
        node_types=node_types,
        settings=settings,
        router=Router(builtin_rules("rq")),
    )
    warm = NodeRuntime(timer.wrap(warm_store, "store"), node_types, heartbeat_seconds=1.0)
    fresh = NodeRuntime(Store(fresh_engine), node_types, heartbeat_seconds=1.0)
    # SQLite's path on PostgreSQL: every transition as separate statements, for what the
    # one-call transition (migration 0010) is worth.
    # Engines of their own, so the warm runtime's statement counts stay its own.
    other_engine = create_database_engine(database_url)
    by_statement = NodeRuntime(
        Store(other_engine, one_statement_writes=False), node_types, heartbeat_seconds=1.0
    )
    relaying_store = Store(create_database_engine(database_url))

    def new_run(dag: BenchDag) -> str:
        request = RunRequest(
            workspace_id=WORKSPACE_ID,
            folder_id=FOLDER_ID,
            job_id="bench-probe",
            workflow_id=dag.workflow_id,
        )
        run, _ = dispatcher.start_run(request)
        return run.job_run_id

    def execute(runtime: NodeRuntime, run_id: str, node: str) -> None:
        result = runtime.execute(job_run_id=run_id, node_id=node, attempt=1)
        if result.outcome.value != "succeeded":
            raise RuntimeError(f"probe node {node} of {run_id}: {result.outcome} {result.error}")

    def timed(action: Callable[[], None]) -> float:
        began = time.perf_counter()
        action()
        return (time.perf_counter() - began) * 1_000

    def warm_figures(samples: list[float]) -> dict[str, Any]:
        return {
            "node_ms": summarise(samples).as_dict(),
            "phases_ms_per_node": timer.per_unit_ms(len(samples)),
            "store_calls_per_node": {k: v / len(samples) for k, v in timer.calls.items()},
            "database_work_per_node": counter.per_unit(len(samples)),
        }

    results: dict[str, Any] = {"in_process": {}, "new_connection_per_node": {}, "forked": {}}
    try:
        names = ("warm", "by_statement", "fresh", "forked", "relayed")
        runs = {name: new_run(chain_dag) for name in names}
        series: dict[str, list[float]] = {name: [] for name in (*names, "empty")}
        timer.reset()
        counter.reset()
        for node in chain_dag.level_order():
            series["warm"].append(timed(partial(execute, warm, runs["warm"], node)))
            series["by_statement"].append(
                timed(partial(execute, by_statement, runs["by_statement"], node))
            )
            fresh_engine.dispose()  # the next node opens a new connection, as a work horse does
            series["fresh"].append(timed(partial(execute, fresh, runs["fresh"], node)))
            # The child's copy of the engines drops its pool at fork (figway's at-fork hook).
            series["forked"].append(_in_child(partial(execute, warm, runs["forked"], node)))
            # As `figway worker rq` runs it: the child records through this process.
            series["relayed"].append(
                _relayed_child(relaying_store, node_types, runs["relayed"], node)
            )
            series["empty"].append(_in_child(lambda: None))
        results["in_process"][chain_dag.workflow_id] = warm_figures(series["warm"])
        results["statement_by_statement"] = {
            chain_dag.workflow_id: summarise(series["by_statement"]).as_dict()
        }
        results["forked_relayed"] = {chain_dag.workflow_id: summarise(series["relayed"]).as_dict()}
        results["new_connection_per_node"][chain_dag.workflow_id] = summarise(
            series["fresh"]
        ).as_dict()
        results["forked"][chain_dag.workflow_id] = {
            "node_ms": summarise(series["forked"]).as_dict(),
            "empty_fork_ms": summarise(series["empty"]).as_dict(),
            "note": "fork -> child runs one node (new database connection) -> child exits",
        }

        run_id = new_run(layered_dag)
        timer.reset()
        counter.reset()
        samples = [
            timed(partial(execute, warm, run_id, node)) for node in layered_dag.level_order()
        ]
        results["in_process"][layered_dag.workflow_id] = warm_figures(samples)
    finally:
        warm_engine.dispose()
        fresh_engine.dispose()
        other_engine.dispose()
        relaying_store.engine.dispose()
    return results


def _in_child(action: Callable[[], None]) -> float:
    """Fork, run ``action`` in the child, wait for it; milliseconds from fork to reaped exit."""
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never return into the benchmark
        code = 0
        try:
            action()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - began) * 1_000
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("a forked probe child failed")
    return elapsed


def _relayed_child(store: Any, node_types: Any, run_id: str, node: str) -> float:
    """A forked child runs one node recording through this process, as a forking
    `figway worker rq` runs it (backends/rq/store_relay.py); milliseconds to reaped exit."""
    from backends.rq.store_relay import StoreRelay
    from backends.runtime.attempts import NodeRuntime

    relay = StoreRelay(store)
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never return into the benchmark
        code = 0
        try:
            runtime = NodeRuntime(relay.in_horse(store), node_types, heartbeat_seconds=1.0)
            result = runtime.execute(job_run_id=run_id, node_id=node, attempt=1)
            code = 0 if result.outcome.value == "succeeded" else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    relay.in_worker()
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - began) * 1_000
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("a relayed probe child failed")
    return elapsed
