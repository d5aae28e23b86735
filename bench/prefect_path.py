"""Benchmark figway's Prefect path against plain Prefect, on a real Prefect server, in one run.

(a) Submission: latency (p50/p99) of ``POST /workflow_runs/`` for a 5-node DAG
    routed to Prefect, beside a baseline of what the gateway does on Prefect
    without figway: one INSERT into a plain table plus
    ``create_flow_run_from_deployment`` on figway's own deployment (also shown
    without the INSERT, and on a new client per call, as figway's executor
    did before it kept one open). No worker runs during (a): its flow runs
    wait Scheduled and are deleted afterwards.
(b) End to end: a 20-level chain and a 20x10 layered DAG (every node of a level
    waits for all 10 nodes of the level below) of noop nodes through figway on
    Prefect, and as a plain Prefect flow of trivial tasks with the same
    scheduling (``bench/prefect_native.py``), both from deployments on
    ``default-worker-pool`` run by the same single ``prefect worker start``.
    Reported: submit -> flow run end, the pick-up delay, and the in-flow time
    (flow run start -> end) from which the per-node overhead is computed:
    (figway in-flow - native in-flow) / nodes; the target is figway within
    1.2x native in-flow.

The run creates and drops two PostgreSQL databases (figway's and the Prefect
server's), flushes its own Redis db, and starts and stops its own Prefect
server, worker and gateway. The latest ``rq_path`` results found in the
results folder are shown beside its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.prefect_endtoend import PrefectEndToEnd, run_schedule, summarise_samples
from bench.prefect_report import PER_NODE_TARGET, find_rq_results, render_markdown, rq_reference
from bench.prefect_stack import WORKER_POOL, PrefectBenchStack, PrefectStackConfig
from bench.prefect_submit import BASELINE, FIGWAY, prefect_submitters
from bench.report import environment, stop_on_sigterm, write_results
from bench.stack import StackConfig
from bench.submit import SubmitTarget, measure_latency
from bench.workflows import BenchDag, chain, layered, small

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: figway's deployment for its ``default`` pool (see backends/prefect/names.py).
FIGWAY_DEPLOYMENT = "figway-run/figway-default"

# Full run / --quick; an explicit option wins over both.
DEFAULTS = {"requests": 300, "warmup": 30, "repeats": 5}
QUICK = {"requests": 20, "warmup": 3, "repeats": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.prefect_path",
        description=__doc__,
        epilog="Needs PostgreSQL and Redis on loopback (`make services`) and figway's virtualenv "
        "(prefect, figway). Results: progress and a Markdown summary on stdout, raw figures as "
        "JSON in bench/results/. The full variant takes about 15 minutes on 2 cores; --quick "
        "about 3.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="end-to-end runs per DAG and system, after one warm-up run of each (full: 5)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="measured sequential submissions per submitter (full: 300)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up submissions per submitter (full: 30)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast smoke run: 20 requests, 3 warm-up, 1 repeat",
    )
    parser.add_argument(
        "--parts",
        default="submit,e2e",
        help="parts to run, comma-separated: submit (a), e2e (b) (default: %(default)s)",
    )
    parser.add_argument(
        "--worker-query-seconds",
        type=float,
        default=PrefectStackConfig.worker_query_seconds,
        help="PREFECT_WORKER_QUERY_SECONDS of the worker: how often it polls for flow runs "
        "(default: %(default)s; Prefect's own default is 10)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=StackConfig.pg_admin_url,
        help="PostgreSQL URL allowed to CREATE/DROP the benchmark's two databases "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=StackConfig.redis_url,
        help="Redis server, without a db number (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=PrefectStackConfig.redis_db,
        help="Redis logical db for figway, flushed before and after (default: %(default)s; "
        "the RQ benchmark uses 12)",
    )
    parser.add_argument(
        "--rq-results",
        type=Path,
        default=None,
        help="rq_path results JSON to show beside these (default: the newest full run in the "
        "output folder, else the newest quick one)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR,
        help="folder for the JSON results (default: bench/results)",
    )
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    chosen = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not chosen or any(part not in ("submit", "e2e") for part in chosen):
        parser.error(f"--parts: choose from submit, e2e (got {args.parts!r})")
    args.parts = chosen
    if args.repeats < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--repeats and --requests must be at least 1, --warmup at least 0")
    if args.worker_query_seconds <= 0:
        parser.error("--worker-query-seconds must be positive")
    return args


def say(message: str) -> None:
    print(message, flush=True)


def register(stack: PrefectBenchStack, dags: list[BenchDag]) -> None:
    """PUT every workflow, routed to Prefect."""
    with httpx.Client(base_url=stack.figway.api_url, timeout=30.0) as client:
        for dag in dags:
            response = client.put(
                f"/workflows/{dag.workflow_id}", json=dag.definition(backend="prefect")
            )
            if response.status_code not in (200, 201):
                raise RuntimeError(
                    f"PUT /workflows/{dag.workflow_id}: {response.status_code} {response.text}"
                )


def part_submit(
    stack: PrefectBenchStack, args: argparse.Namespace, dag: BenchDag, deployment_id: Any
) -> dict[str, Any]:
    """(a): sequential latency of every submitter; no worker runs meanwhile."""
    factories = prefect_submitters(deployment_id)
    target = SubmitTarget(
        stack.figway.api_url, stack.figway.database_url, stack.figway.redis_url, dag
    )
    say(f"(a) submit latency: {args.requests} x {len(factories)} submitters, no worker running")
    latency = measure_latency(
        target,
        list(factories),
        requests=args.requests,
        warmup=args.warmup,
        progress=say,
        factories=factories,
    )
    for result in latency:
        say(
            f"  {result.label:<60} p50 {result.summary.p50:7.2f} ms  "
            f"p99 {result.summary.p99:7.2f} ms"
        )
    deleted = stack.delete_flow_runs(["SCHEDULED", "PENDING"])
    say(f"  deleted the {deleted} flow runs it created (still Scheduled)")
    by_name = {result.name: result for result in latency}
    return {
        "submit_latency": [dataclasses.asdict(result) for result in latency],
        "deleted_flow_runs": deleted,
        "submit_p50_ratio": by_name[FIGWAY].summary.p50 / by_name[BASELINE].summary.p50,
    }


def part_end_to_end(
    stack: PrefectBenchStack, args: argparse.Namespace, dags: list[BenchDag], native_id: Any
) -> dict[str, Any]:
    """(b): every DAG through figway and as a native flow, on one worker."""
    say(f"(b) end to end: starting `prefect worker start --pool {WORKER_POOL}`")
    stack.start_worker()
    runner = PrefectEndToEnd(stack, native_id)
    try:
        samples = run_schedule(runner, dags=dags, repeats=args.repeats, progress=say)
    finally:
        runner.close()
        stack.stop_worker()
    return {
        "samples": [dataclasses.asdict(sample) for sample in samples],
        "summary": summarise_samples(samples),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    submit_dag, chain_dag, layered_dag = small(), chain(20), layered(20, 10)
    dags = [submit_dag, chain_dag, layered_dag]
    config = PrefectStackConfig(
        pg_admin_url=args.pg_admin_url,
        redis_url=args.redis_url,
        redis_db=args.redis_db,
        worker_query_seconds=args.worker_query_seconds,
    )
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "repeats": args.repeats,
            "requests": args.requests,
            "warmup": args.warmup,
            "parts": args.parts,
            "quick": args.quick,
            "worker_query_seconds": args.worker_query_seconds,
            "submit_dag": f"{submit_dag.workflow_id} ({submit_dag.description})",
            "chain_dag": f"{chain_dag.workflow_id} ({chain_dag.description})",
            "layered_dag": f"{layered_dag.workflow_id} ({layered_dag.description})",
        },
        "part_seconds": {},
        "targets": {},
    }
    began = time.perf_counter()
    # This process's Prefect client reads its settings when prefect is first imported.
    if "prefect" in sys.modules:
        raise RuntimeError("prefect was imported before the benchmark could configure it")
    stack = PrefectBenchStack(config)
    os.environ.update(stack.client_env)
    say(
        f"starting: databases, Prefect server on :{stack.port}, Redis db {args.redis_db}, "
        "`figway db upgrade`, `figway serve`, `figway setup prefect`"
    )
    with stack:
        say(
            f"  Prefect database {stack.database}, figway database {stack.figway.database}, "
            f"gateway {stack.figway.api_url}, logs in {stack.workdir} and {stack.figway.workdir}"
        )
        results["environment"] = environment(
            stack.figway.database_url, stack.figway.redis, extra_packages=("prefect",)
        )
        results["environment"]["prefect_server_api"] = stack.server_version()
        results["environment"]["prefect_thread_pool_max_workers"] = os.environ.get(
            "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS", "unset (unbounded)"
        )
        results["setup_output"] = stack.setup_output
        register(stack, dags)

        from bench.prefect_native import ensure_native_deployment

        with stack.client() as client:
            figway_deployment = client.read_deployment_by_name(FIGWAY_DEPLOYMENT).id
            native_deployment = ensure_native_deployment(client, WORKER_POOL)

        if "submit" in args.parts:
            part_began = time.perf_counter()
            submitted = part_submit(stack, args, submit_dag, figway_deployment)
            results["targets"]["submit_p50_ratio"] = submitted.pop("submit_p50_ratio")
            results.update(submitted)
            results["part_seconds"]["submit"] = time.perf_counter() - part_began

        if "e2e" in args.parts:
            part_began = time.perf_counter()
            results["end_to_end"] = part_end_to_end(
                stack, args, [chain_dag, layered_dag], native_deployment
            )
            results["targets"]["in_flow"] = [
                {
                    "dag": row["dag"],
                    "ratio": row["in_flow_ratio"],
                    "per_node_overhead_ms": row["per_node_overhead_ms"],
                }
                for row in results["end_to_end"]["summary"]
            ]
            results["part_seconds"]["e2e"] = time.perf_counter() - part_began

    rq_path = args.rq_results or find_rq_results(args.output)
    if rq_path is not None:
        sizes = {dag.workflow_id: dag.size for dag in dags}
        results["rq_reference"] = rq_reference(rq_path, sizes)
    results["elapsed_seconds"] = time.perf_counter() - began
    results["environment"]["load_average_at_end"] = os.getloadavg()
    parts = ", ".join(f"{part} {sec:.0f} s" for part, sec in results["part_seconds"].items())
    say(
        f"done in {results['elapsed_seconds']:.0f} s ({parts}); processes stopped, "
        "databases dropped, Redis db flushed"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        results = run(args)
    except KeyboardInterrupt:
        say("interrupted: processes stopped, databases dropped")
        return 130
    name = f"prefect_path{'-quick' if args.quick else ''}"
    path = write_results(results, render_markdown(results), output=args.output, name=name)
    say(f"raw results: {path}")
    say(f"target: figway's in-flow time on Prefect <= {PER_NODE_TARGET:g}x native Prefect's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
