"""Benchmark figway's RQ path against plain RQ, on real PostgreSQL and Redis, in one run.

(a) Submission: latency (p50/p99) of ``POST /workflow_runs/`` for a 5-node DAG
    and sustained submissions per second, beside a baseline of one INSERT into a
    plain table plus the same DAG enqueued with plain RQ.
(b) End to end: a 20-level chain and a 20x10 layered DAG (every node of a level
    waits for all 10 nodes of the level below) of noop nodes, through figway and
    enqueued natively with RQ, run by the same ``figway worker rq`` processes,
    with RQ's forking ``Worker`` and with ``SimpleWorker`` (``--simple``).
(c) Probes that explain (b): PostgreSQL connection setup, and figway's node
    runtime on noop nodes in this process, warm and in a forked child per node.

The run creates and drops its own database, flushes its own Redis db, starts
and stops its own gateway and workers. `make bench` runs the full variant:
5 to 9 minutes on 2 cores.
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

from bench.endtoend import EndToEndRunner, run_schedule, summarise_samples
from bench.probes import node_runtime_probe, pg_connect_probe
from bench.report import (
    END_TO_END_TARGET,
    SUBMIT_TARGET,
    environment,
    render_markdown,
    stop_on_sigterm,
    write_results,
)
from bench.stack import BenchStack, StackConfig, rss_kb
from bench.submit import SubmitTarget, measure_latency, measure_sustained
from bench.workflows import BenchDag, chain, layered, small

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATENCY_SUBMITTERS = (
    "figway_http",
    "figway_inprocess",
    "baseline",
    "baseline_per_job",
    "http_floor",
)
SUSTAINED_SUBMITTERS = ("figway_http", "baseline")
MODES = ("fork", "simple")

# Full run / --quick; an explicit option wins over both.
DEFAULTS = {"requests": 300, "warmup": 30, "repeats": 5, "sustain_seconds": 10.0}
QUICK = {"requests": 40, "warmup": 5, "repeats": 1, "sustain_seconds": 2.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rq_path",
        description=__doc__,
        epilog="Needs PostgreSQL and Redis on loopback (`make services`); `make bench` runs the "
        "full variant. Results: a Markdown summary on stdout, raw figures as JSON in bench/results/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="RQ worker processes per worker mode (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="end-to-end runs per DAG, system and mode (full: 5)",
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
        "--clients",
        type=int,
        default=4,
        help="concurrent clients of the sustained test (default: %(default)s)",
    )
    parser.add_argument(
        "--sustain-seconds",
        type=float,
        default=None,
        help="length of each sustained test (full: 10)",
    )
    parser.add_argument(
        "--max-sustained",
        type=int,
        default=5_000,
        help="cap on submissions per sustained test (default: %(default)s)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="worker modes for part (b), comma-separated: fork (RQ's Worker, the default of "
        "`figway worker rq`) and/or simple (SimpleWorker, `--simple`); default: %(default)s",
    )
    parser.add_argument(
        "--parts",
        default="submit,e2e,probe",
        help="parts to run, comma-separated: submit (a), e2e (b), probe (c) (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast smoke run: 40 requests, 5 warm-up, 1 repeat, 2 s sustained",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=StackConfig.pg_admin_url,
        help="PostgreSQL URL allowed to CREATE/DROP the benchmark's own database (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=StackConfig.redis_url,
        help="Redis server, without a db number (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=StackConfig.redis_db,
        help="Redis logical db, flushed before and after (default: %(default)s)",
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
    args.modes = _choices(parser, "--modes", args.modes, MODES)
    args.parts = _choices(parser, "--parts", args.parts, ("submit", "e2e", "probe"))
    if args.workers < 1 or args.repeats < 1 or args.requests < 1 or args.clients < 1:
        parser.error("--workers, --repeats, --requests and --clients must be at least 1")
    return args


def _choices(
    parser: argparse.ArgumentParser, option: str, value: str, allowed: tuple[str, ...]
) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        parser.error(f"{option}: choose from {', '.join(allowed)} (got {value!r})")
    return chosen


def say(message: str) -> None:
    print(message, flush=True)


def register(stack: BenchStack, dags: list[BenchDag]) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as client:
        for dag in dags:
            response = client.put(f"/workflows/{dag.workflow_id}", json=dag.definition())
            if response.status_code not in (200, 201):
                raise RuntimeError(
                    f"PUT /workflows/{dag.workflow_id}: {response.status_code} {response.text}"
                )


def part_submit(stack: BenchStack, args: argparse.Namespace, dag: BenchDag) -> dict[str, Any]:
    """(a): sequential latency of every submitter, then the sustained rate of two of them."""
    target = SubmitTarget(stack.api_url, stack.database_url, stack.redis_url, dag)
    say(f"(a) submit latency: {args.requests} x {len(LATENCY_SUBMITTERS)} submitters, no workers")
    latency = measure_latency(
        target, LATENCY_SUBMITTERS, requests=args.requests, warmup=args.warmup, progress=say
    )
    for result in latency:
        say(
            f"  {result.label:<52} p50 {result.summary.p50:7.2f} ms  "
            f"p99 {result.summary.p99:7.2f} ms"
        )
    sustained = []
    for name in SUSTAINED_SUBMITTERS:
        say(f"(a) sustained: {name}, {args.clients} clients for {args.sustain_seconds:g} s")
        rate = measure_sustained(
            target,
            name,
            clients=args.clients,
            seconds=args.sustain_seconds,
            max_submissions=args.max_sustained,
        )
        say(f"  {rate.submissions} submissions, {rate.per_second:.1f}/s")
        sustained.append(dataclasses.asdict(rate))
    stack.redis.flushdb()  # the submitted jobs never run: drop them before part (b)
    by_name = {result.name: result for result in latency}
    return {
        "submit_latency": [dataclasses.asdict(result) for result in latency],
        "sustained": sustained,
        "submit_p50_ratio": by_name["figway_http"].summary.p50 / by_name["baseline"].summary.p50,
    }


def part_end_to_end(
    stack: BenchStack, args: argparse.Namespace, dags: list[BenchDag]
) -> dict[str, Any]:
    """(b): every DAG through figway and natively, on each worker mode in turn."""
    runner = EndToEndRunner(stack.api_url, stack.redis)
    samples = []
    worker_rss: dict[str, list[int]] = {}
    try:
        for mode in args.modes:
            say(f"(b) end to end: starting {args.workers} `figway worker rq` ({mode})")
            stack.start_workers(args.workers, simple=mode == "simple")
            samples += run_schedule(
                runner, mode=mode, dags=dags, repeats=args.repeats, progress=say
            )
            worker_rss[mode] = stack.worker_rss_kb()
            stack.stop_workers()
    finally:
        runner.close()
    return {
        "samples": [dataclasses.asdict(sample) for sample in samples],
        "summary": summarise_samples(samples),
        "worker_rss_kb": worker_rss,
    }


def part_probe(stack: BenchStack, chain_dag: BenchDag, layered_dag: BenchDag) -> dict[str, Any]:
    """(c): figway's node runtime without RQ, warm, on new connections and forked."""
    say("(c) probes: node runtime in-process and in forked children, no RQ")
    probe = node_runtime_probe(stack.database_url, stack.redis_url, chain_dag, layered_dag)
    probe["probe_process_rss_kb"] = rss_kb(os.getpid())
    return probe


def run(args: argparse.Namespace) -> dict[str, Any]:
    submit_dag, chain_dag, layered_dag = small(), chain(20), layered(20, 10)
    config = StackConfig(
        pg_admin_url=args.pg_admin_url, redis_url=args.redis_url, redis_db=args.redis_db
    )
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "workers": args.workers,
            "repeats": args.repeats,
            "requests": args.requests,
            "warmup": args.warmup,
            "clients": args.clients,
            "sustain_seconds": args.sustain_seconds,
            "max_sustained": args.max_sustained,
            "modes": args.modes,
            "parts": args.parts,
            "quick": args.quick,
            "submit_dag": f"{submit_dag.workflow_id} ({submit_dag.description})",
            "chain_dag": f"{chain_dag.workflow_id} ({chain_dag.description})",
            "layered_dag": f"{layered_dag.workflow_id} ({layered_dag.description})",
        },
        "part_seconds": {},
        "targets": {},
    }
    began = time.perf_counter()
    say(f"starting: database, Redis db {args.redis_db}, `figway db upgrade`, `figway serve`")
    with BenchStack(config) as stack:
        say(f"  database {stack.database}, gateway {stack.api_url}, logs in {stack.workdir}")
        results["environment"] = environment(stack.database_url, stack.redis)
        results["probes"] = {"pg_connect_ms": pg_connect_probe(stack.database_url)}
        register(stack, [submit_dag, chain_dag, layered_dag])

        if "submit" in args.parts:
            part_began = time.perf_counter()
            submitted = part_submit(stack, args, submit_dag)
            results["targets"]["submit_p50_ratio"] = submitted.pop("submit_p50_ratio")
            results.update(submitted)
            results["part_seconds"]["submit"] = time.perf_counter() - part_began

        if "e2e" in args.parts:
            part_began = time.perf_counter()
            results["end_to_end"] = part_end_to_end(stack, args, [chain_dag, layered_dag])
            results["targets"]["end_to_end"] = [
                {"mode": row["mode"], "dag": row["dag"], "ratio": row["ratio"]}
                for row in results["end_to_end"]["summary"]
            ]
            results["part_seconds"]["e2e"] = time.perf_counter() - part_began

        if "probe" in args.parts:
            part_began = time.perf_counter()
            results["probes"]["node_runtime"] = part_probe(stack, chain_dag, layered_dag)
            results["part_seconds"]["probe"] = time.perf_counter() - part_began

    results["elapsed_seconds"] = time.perf_counter() - began
    results["environment"]["load_average_at_end"] = os.getloadavg()
    parts = ", ".join(f"{part} {sec:.0f} s" for part, sec in results["part_seconds"].items())
    say(f"done in {results['elapsed_seconds']:.0f} s ({parts}); database dropped, Redis db flushed")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        results = run(args)
    except KeyboardInterrupt:
        say("interrupted: services stopped, database dropped")
        return 130
    name = f"rq_path{'-quick' if args.quick else ''}"
    path = write_results(results, render_markdown(results), output=args.output, name=name)
    say(f"raw results: {path}")
    say(
        f"targets: submit p50 <= {SUBMIT_TARGET:g}x baseline, end to end <= {END_TO_END_TARGET:g}x native RQ"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
