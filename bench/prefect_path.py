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
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import prefect_report
from bench.harness import BenchPath, main, say
from bench.prefect_endtoend import PrefectEndToEnd, PrefectSample, summarise_samples
from bench.prefect_stack import WORKER_POOL, PrefectBenchStack, PrefectStackConfig
from bench.prefect_submit import prefect_submitters
from bench.submit import SubmitterFactory
from bench.workflows import chain, layered, small

#: figway's deployment for its ``default`` pool (see backends/prefect/names.py).
FIGWAY_DEPLOYMENT = "figway-run/figway-default"


class PrefectPath(BenchPath):
    name = "prefect_path"
    backend = "prefect"
    doc = __doc__ or ""
    epilog = (
        "Needs PostgreSQL and Redis on loopback (`make services`) and figway's virtualenv "
        "(prefect, figway). Results: progress and a Markdown summary on stdout, raw figures as "
        "JSON in bench/results/. The full variant takes about 15 minutes on 2 cores; --quick "
        "about 3."
    )
    presets = {
        "full": {"requests": 300, "warmup": 30, "repeats": 5},
        "quick": {"requests": 20, "warmup": 3, "repeats": 1},
    }
    redis_db = PrefectStackConfig.redis_db
    packages = ("prefect",)
    report = prefect_report
    baseline = "baseline (INSERT + create_flow_run_from_deployment)"
    submit_note = "no worker running, flow runs left Scheduled and deleted after"
    closing = (
        f"target: figway's in-flow time on Prefect <= {prefect_report.PER_NODE_TARGET:g}x "
        "native Prefect's"
    )

    def __init__(self) -> None:
        self._deployments: dict[str, Any] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--worker-query-seconds",
            type=float,
            default=PrefectStackConfig.worker_query_seconds,
            help="PREFECT_WORKER_QUERY_SECONDS of the worker: how often it polls for flow runs "
            "(default: %(default)s; Prefect's own default is 10)",
        )
        parser.add_argument(
            "--rq-results",
            type=Path,
            default=None,
            help="rq_path results JSON to show beside these (default: the newest full run in "
            "the output folder, else the newest quick one)",
        )

    def check(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.worker_query_seconds <= 0:
            parser.error("--worker-query-seconds must be positive")

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"worker_query_seconds": args.worker_query_seconds}

    @contextlib.contextmanager
    def stack(self, args: argparse.Namespace) -> Iterator[PrefectBenchStack]:
        stack = PrefectBenchStack(
            PrefectStackConfig(
                pg_admin_url=args.pg_admin_url,
                redis_url=args.redis_url,
                redis_db=args.redis_db,
                worker_query_seconds=args.worker_query_seconds,
            )
        )
        say(f"  Prefect server on :{stack.port}, its database {stack.database}")
        with stack.as_client(), stack:
            yield stack

    def prepare(
        self, stack: PrefectBenchStack, args: argparse.Namespace, results: dict[str, Any]
    ) -> None:
        results["environment"]["prefect_server_api"] = stack.server_version()
        results["environment"]["prefect_thread_pool_max_workers"] = os.environ.get(
            "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS", "unset (unbounded)"
        )
        results["setup_output"] = stack.setup_output
        from bench.prefect_native import ensure_native_deployment

        with stack.client() as client:
            self._deployments["figway"] = client.read_deployment_by_name(FIGWAY_DEPLOYMENT).id
            self._deployments["native"] = ensure_native_deployment(client, WORKER_POOL)

    def submitters(self, stack: PrefectBenchStack) -> dict[str, tuple[str, SubmitterFactory]]:
        return prefect_submitters(self._deployments["figway"])

    def after_submit(self, stack: PrefectBenchStack) -> dict[str, Any]:
        deleted = stack.delete_flow_runs(["SCHEDULED", "PENDING"])
        say(f"  deleted the {deleted} flow runs it created (still Scheduled)")
        return {"deleted_flow_runs": deleted}

    @contextlib.contextmanager
    def workers(
        self, stack: PrefectBenchStack, args: argparse.Namespace, mode: str
    ) -> Iterator[dict[str, Any]]:
        say(f"  `prefect worker start --pool {WORKER_POOL}`")
        stack.start_worker()
        try:
            yield {}
        finally:
            stack.stop_worker()

    def runner(self, stack: PrefectBenchStack, mode: str) -> PrefectEndToEnd:
        return PrefectEndToEnd(stack, self._deployments["native"])

    def summarise(self, samples: Sequence[PrefectSample]) -> list[dict[str, Any]]:
        return summarise_samples(samples)

    def e2e_targets(self, summary: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        rows = [
            {
                "dag": row["dag"],
                "ratio": row["in_flow_ratio"],
                "per_node_overhead_ms": row["per_node_overhead_ms"],
            }
            for row in summary
        ]
        return "in_flow", rows

    def finish(self, args: argparse.Namespace, results: dict[str, Any]) -> None:
        rq_path = args.rq_results or prefect_report.find_rq_results(args.output)
        if rq_path is not None:
            sizes = {dag.workflow_id: dag.size for dag in (small(), chain(20), layered(20, 10))}
            results["rq_reference"] = prefect_report.rq_reference(rq_path, sizes)

    def software(self, results: dict[str, Any]) -> str:
        env = results["environment"]
        return (
            f"prefect {env['packages'].get('prefect')} (server API {env.get('prefect_server_api')})"
        )


PATH = PrefectPath()

if __name__ == "__main__":
    sys.exit(main(PATH))
