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
(d) Scale (``--scale-runs N``, ``make bench-scale``): submission p50 and node
    in-job time on the empty database, then again after N finished runs (with
    their nodes, journal and log lines) were written into it server-side, and
    ``EXPLAIN (ANALYZE, BUFFERS)`` of the hot statements on the full tables
    (``bench/scale.py``).

The run creates and drops its own database, flushes its own Redis db, starts
and stops its own gateway and workers. `make bench` runs the full variant:
5 to 9 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from bench import rq_report
from bench.endtoend import EndToEndRunner, EndToEndSample, summarise_samples
from bench.harness import BenchPath, choices, main, positive_ints, say
from bench.probes import node_runtime_probe, pg_connect_probe
from bench.stack import BenchStack, StackConfig, rss_kb
from bench.submit import SubmitterFactory, submitter_factories
from bench.workflows import BenchDag

MODES = ("fork", "simple")


class RqPath(BenchPath):
    name = "rq_path"
    backend = "rq"
    doc = __doc__ or ""
    epilog = (
        "Needs PostgreSQL and Redis on loopback (`make services`); `make bench` runs the "
        "full variant. Results: a Markdown summary on stdout, raw figures as JSON in bench/results/."
    )
    presets = {
        "full": {"requests": 300, "warmup": 30, "repeats": 5, "sustain_seconds": 10.0},
        "quick": {"requests": 40, "warmup": 5, "repeats": 1, "sustain_seconds": 2.0},
    }
    parts = ("submit", "e2e", "probe", "scale")
    #: The scale part seeds the database for minutes: only when asked (`make bench-scale`).
    default_parts = ("submit", "e2e", "probe")
    redis_db = StackConfig.redis_db
    sustained = ("figway_http", "baseline")
    report = rq_report
    submit_target = rq_report.SUBMIT_TARGET
    closing = (
        f"targets: submit p50 <= {rq_report.SUBMIT_TARGET:g}x baseline, end to end <= "
        f"{rq_report.END_TO_END_TARGET:g}x native RQ, at scale <= {rq_report.SCALE_TARGET:g}x empty"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--workers",
            type=int,
            default=2,
            help="RQ worker processes per worker mode (default: %(default)s)",
        )
        parser.add_argument(
            "--clients",
            type=positive_ints,
            default=[1, 4, 16],
            help="concurrent clients of the sustained tests, comma-separated (default: 1,4,16)",
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
            type=choices(MODES),
            default=list(MODES),
            help="worker modes for part (b), comma-separated: fork (RQ's Worker, the default "
            "of `figway worker rq`) and/or simple (SimpleWorker, `--simple`); default: fork,simple",
        )
        parser.add_argument(
            "--release",
            choices=("figway", "rq"),
            default="figway",
            help="who starts figway's ready nodes (FIGWAY_RQ_RELEASE): figway's finishing job "
            "(the default) or RQ's depends_on, to measure one against the other",
        )
        parser.add_argument(
            "--scale-runs",
            type=int,
            default=1_000_000,
            help="part (d), `--parts scale`: finished runs seeded before measuring again "
            "(default: %(default)s)",
        )

    def check(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.workers < 1 or not args.modes:
            parser.error("--workers must be at least 1, --modes not empty")
        if args.scale_runs < 1:
            parser.error("--scale-runs must be at least 1")

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "workers": args.workers,
            "clients": args.clients,
            "sustain_seconds": args.sustain_seconds,
            "max_sustained": args.max_sustained,
            "modes": args.modes,
            "scale_runs": args.scale_runs,
            "release": args.release,
        }

    def stack(self, args: argparse.Namespace) -> contextlib.AbstractContextManager[BenchStack]:
        return BenchStack(
            StackConfig(
                pg_admin_url=args.pg_admin_url,
                redis_url=args.redis_url,
                redis_db=args.redis_db,
                # Part (a) leaves hundreds of runs queued and flushes their jobs on purpose;
                # the reconciler would otherwise queue them again and the workers would run
                # them during part (b). Its own cost is not what this benchmark measures.
                # And it would start Prefect's temporary API beside the RQ path being
                # measured: no run here goes to Prefect.
                extra_env={
                    "FIGWAY_NODE_SILENCE_SECONDS": "3600",
                    "FIGWAY_PREFECT_EARLY_START": "false",
                    "FIGWAY_RQ_RELEASE": args.release,
                },
            )
        )

    def prepare(self, stack: BenchStack, args: argparse.Namespace, results: dict[str, Any]) -> None:
        results["probes"] = {"pg_connect_ms": pg_connect_probe(stack.database_url)}

    def submitters(self, stack: BenchStack) -> dict[str, tuple[str, SubmitterFactory]]:
        return submitter_factories()

    def after_submit(self, stack: BenchStack) -> dict[str, Any]:
        stack.redis.flushdb()  # the submitted jobs never run: drop them before part (b)
        return {}

    def modes(self, args: argparse.Namespace) -> list[str]:
        return list(args.modes)

    @contextlib.contextmanager
    def workers(
        self, stack: BenchStack, args: argparse.Namespace, mode: str
    ) -> Iterator[dict[str, Any]]:
        stack.start_workers(args.workers, simple=mode == "simple")
        about: dict[str, Any] = {}
        try:
            yield about
            about["worker_rss_kb"] = stack.worker_rss_kb()
        finally:
            stack.stop_workers()

    def runner(self, stack: BenchStack, mode: str) -> EndToEndRunner:
        return EndToEndRunner(stack.api_url, stack.redis, mode)

    def summarise(self, samples: Sequence[EndToEndSample]) -> list[dict[str, Any]]:
        return summarise_samples(samples)

    def e2e_targets(self, summary: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        rows = [{"mode": row["mode"], "dag": row["dag"], "ratio": row["ratio"]} for row in summary]
        return "end_to_end", rows

    def part(
        self, name: str, stack: BenchStack, args: argparse.Namespace, dags: Sequence[BenchDag]
    ) -> dict[str, Any]:
        _, chain_dag, layered_dag = dags
        if name == "probe":
            say("(c) probes: node runtime in-process and in forked children, no RQ")
            probe = node_runtime_probe(stack.database_url, stack.redis_url, chain_dag, layered_dag)
            probe["probe_process_rss_kb"] = rss_kb(os.getpid())
            return {"probes": {"node_runtime": probe}}
        from bench.scale import part_scale

        return part_scale(self, stack, args, dags)

    def software(self, results: dict[str, Any]) -> str:
        packages = results["environment"]["packages"]
        return f"rq {packages['rq']}, redis-py {packages['redis']}"


PATH = RqPath()

if __name__ == "__main__":
    sys.exit(main(PATH))
