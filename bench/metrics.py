"""Benchmark figway's /metrics: a scrape with 200 workflows x 2 backends of series, and what
recording metrics adds to accepting a run.

No service is needed: the ledger's totals live in a SQLite file built here,
folded from synthetic finished runs the way the gateway folds real ones
(``MetricRecords.fold_runs`` is exercised, then ``MetricsLedger.round``).

- **Scrape**: ``generate_latest`` over figway's registry (the ledger's
  collector and the gateway's own series), the exact body ``GET /metrics``
  returns, against a baseline in the same run: prometheus_client's own
  Counter and Histogram objects holding the same series, rendered the same way.
- **Submit path**: the two calls ``Dispatcher.start_run`` makes on each new
  run (``GatewayMetrics.decided`` and ``submitted``), against an empty call
  timed the same way; set beside the submit latency measured by ``make
  bench-rq`` it gives the share metrics add.

Each call is timed on its own with ``time.perf_counter_ns``; the figures are
printed as a Markdown table. It asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from backends.store import create_database_engine, upgrade
from backends.store.metric_records import FoldedNode, FoldedRun, MetricRecords
from backends.store.routing_records import RoutingRecords
from bench.report import format_load, machine, markdown_table
from bench.stats import percentile
from gateway.metrics.families import BUCKETS
from gateway.metrics.ledger import LedgerCollector, MetricsLedger, increments
from gateway.metrics.process import GatewayMetrics

NODE_TYPES = ("noop", "sleep", "python", "postgres_extract", "sql_transform")
T0 = datetime(2026, 11, 29, tzinfo=UTC)


def synthetic_runs(workflows: int) -> list[FoldedRun]:
    """Per workflow and backend, runs of every outcome spread over many buckets."""
    runs = []
    for w in range(workflows):
        for backend in ("rq", "prefect"):
            for i, outcome in enumerate(("succeeded", "succeeded", "failed", "cancelled")):
                seconds = 0.01 * (3 ** (i + w % 7))
                runs.append(
                    FoldedRun(
                        workflow_id=f"workflow-{w:03d}",
                        backend=backend,
                        status=outcome,
                        submitted=True,
                        ended=True,
                        submitted_at=T0,
                        started_at=T0 + timedelta(seconds=seconds / 10),
                        finished_at=T0 + timedelta(seconds=seconds),
                        nodes=tuple(
                            FoldedNode(t, 1 + i % 2, T0, T0 + timedelta(seconds=seconds / 3))
                            for t in NODE_TYPES
                        ),
                    )
                )
    return runs


def figway_registry(database: Path, runs: list[FoldedRun]) -> tuple[CollectorRegistry, int]:
    engine = create_database_engine(f"sqlite:///{database}")
    upgrade(engine)
    records = MetricRecords(engine)
    records.add_totals(increments(runs))
    ledger = MetricsLedger(records, RoutingRecords(engine), lease_seconds=60, holder="bench")
    ledger.round()
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    for run in runs[:400]:
        metrics.decided(backend=run.backend, rule=None, reason="default")
        metrics.submitted(backend=run.backend, seconds=0.03)
    registry.register(LedgerCollector(ledger))
    return registry, len(ledger.snapshot())


def baseline_registry(runs: list[FoldedRun]) -> CollectorRegistry:
    """The same series in prometheus_client's own objects: the reference for rendering."""
    registry = CollectorRegistry()
    finished = Counter(
        "runs_finished", "", ["backend", "workflow_id", "outcome"], registry=registry
    )
    duration = Histogram("run_duration_seconds", "", ["backend", "workflow_id"], buckets=BUCKETS, registry=registry)  # fmt: skip
    wait = Histogram("run_queue_wait_seconds", "", ["backend", "workflow_id"], buckets=BUCKETS, registry=registry)  # fmt: skip
    nodes = Histogram("node_duration_seconds", "", ["backend", "node_type"], buckets=BUCKETS, registry=registry)  # fmt: skip
    for run in runs:
        assert run.started_at is not None
        assert run.finished_at is not None
        assert run.submitted_at is not None
        finished.labels(run.backend, run.workflow_id, run.status).inc()
        duration.labels(run.backend, run.workflow_id).observe((run.finished_at - run.started_at).total_seconds())  # fmt: skip
        wait.labels(run.backend, run.workflow_id).observe((run.started_at - run.submitted_at).total_seconds())  # fmt: skip
        for node in run.nodes:
            assert node.started_at is not None
            assert node.finished_at is not None
            nodes.labels(run.backend, node.node_type).observe((node.finished_at - node.started_at).total_seconds())  # fmt: skip
    return registry


def timed(call: Any, samples: int) -> list[float]:
    """Microseconds per call, each timed on its own, garbage collector off."""
    for _ in range(max(3, samples // 20)):
        call()
    gc.disable()
    try:
        out = []
        for _ in range(samples):
            start = time.perf_counter_ns()
            call()
            out.append((time.perf_counter_ns() - start) / 1_000)
        return out
    finally:
        gc.enable()


def summary(name: str, values: list[float], unit: str = "µs") -> list[str]:
    return [
        name,
        f"{len(values):,}",
        f"{percentile(values, 50):,.1f} {unit}",
        f"{percentile(values, 95):,.1f} {unit}",
        f"{percentile(values, 99):,.1f} {unit}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workflows", type=int, default=200, help="workflows with series (200)")
    parser.add_argument("--scrapes", type=int, default=200, help="timed scrapes per case (200)")
    parser.add_argument(
        "--calls", type=int, default=100_000, help="timed submit-path calls (100,000)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    started = datetime.now(UTC)
    host = machine()
    runs = synthetic_runs(args.workflows)
    print(
        f"building series for {args.workflows} workflows x 2 backends ({len(runs)} runs) ...",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        registry, totals = figway_registry(Path(scratch) / "metrics.db", runs)
        reference = baseline_registry(runs)
        body = generate_latest(registry)
        reference_body = generate_latest(reference)
        print(f"timing {args.scrapes} scrapes of each registry ...", flush=True)
        figway_scrape = timed(lambda: generate_latest(registry), args.scrapes)
        baseline_scrape = timed(lambda: generate_latest(reference), args.scrapes)

    metrics = GatewayMetrics(CollectorRegistry())

    def record() -> None:
        metrics.decided(backend="rq", rule="canary", reason="rollout")
        metrics.submitted(backend="rq", seconds=0.034)

    print(f"timing {args.calls:,} submit-path recordings ...", flush=True)
    recording = timed(record, args.calls)
    empty = timed(lambda: None, args.calls)

    lines = [
        f"Run {started.isoformat(timespec='seconds')} on {host['cpus']} CPUs ({host['cpu']}), "
        f"Python {host['python']}; figway {host['figway_commit']}. Load average at start "
        f"{format_load(host.get('load_average_at_start'))}.",
        "",
        f"Series: {args.workflows} workflows x 2 backends, {totals:,} ledger totals; "
        f"/metrics body {len(body) / 1024:,.0f} KiB (baseline {len(reference_body) / 1024:,.0f} KiB).",
        "",
        markdown_table(
            ["case", "calls", "p50", "p95", "p99"],
            [
                summary("scrape: figway /metrics body", [v / 1_000 for v in figway_scrape], "ms"),
                summary(
                    "scrape: prometheus_client objects, same series",
                    [v / 1_000 for v in baseline_scrape],
                    "ms",
                ),
                summary("submit path: metrics recorded per new run", recording),
                summary("submit path: an empty call, timed the same way", empty),
            ],
        ),
    ]
    report = "\n".join(lines)
    print()
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "started_at": started.isoformat(),
                    "machine": host,
                    "totals": totals,
                    "body_bytes": len(body),
                    "figway_scrape_us": figway_scrape,
                    "baseline_scrape_us": baseline_scrape,
                    "recording_us_p50": percentile(recording, 50),
                    "markdown": report,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
