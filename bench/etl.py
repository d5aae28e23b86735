"""Benchmark figway's ETL nodes: rows from PostgreSQL through DuckDB back into PostgreSQL.

A 3-node workflow runs through the real gateway on each backend:
``postgres_extract`` (``select * from`` a generated source table of six mixed
columns) -> ``sql_transform`` (``select *, amount * 1.2 as gross from
extract``) -> ``postgres_load`` (mode replace). The connection is the secret
``bench-etl-pg`` (``FIGWAY_SECRET_BENCH_ETL_PG`` in every process's
environment) and the artifact store a directory every process shares
(``FIGWAY_ARTIFACT_URL``).

- RQ: ``figway serve`` and one ``figway worker rq`` (RQ's forking worker: a
  work horse per node);
- Prefect: a Prefect server, ``figway setup prefect``, ``figway serve`` and one
  ``prefect worker start --pool default-worker-pool`` (a ``python -m
  prefect.engine`` process per flow run; the workflow says ``pool: default``,
  since postgres nodes would otherwise pick the postgres pool).

Two references run in the same rounds, in turn with figway: ``psql``'s
``\\copy ... to stdout`` piped into ``psql``'s ``\\copy ... from stdin`` (the
physical floor: no Parquet, no transform), and the same extract -> Parquet ->
transform -> load in one plain Python process (:mod:`bench.etl_native`).

Reported per system and row count, median and min-max of the repeats: the
time from just before the POST to the run's ``finished_at``, rows per second,
each node's duration, and the peak RSS of the worker's process tree sampled
every 20 ms (the largest single process, which one, and the tree's sum). The
target's row count is checked against the source after every run: a run that
loaded nothing fails the benchmark. The run creates and drops its own
databases, flushes its own Redis dbs, and removes its artifacts.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from backends.model.backend_names import BACKEND_NAMES
from backends.runtime.secrets import environment_variable
from bench.etl_native import TRANSFORM
from bench.etl_report import megabytes, memory_verdicts, render_markdown, summarise
from bench.etl_runs import (
    SECRET,
    EtlDatabase,
    FigwayEtl,
    FigwaySystem,
    Sample,
    copy_reference,
    native_reference,
    prefect_roles,
    rq_roles,
)
from bench.harness import (
    add_service_arguments,
    choices,
    command,
    finish_results,
    interleave,
    new_results,
    say,
)
from bench.prefect_stack import PrefectBenchStack, PrefectStackConfig
from bench.report import environment
from bench.stack import BenchStack, StackConfig

__all__ = ["main", "parse_args", "run"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Redis logical db of this benchmark's RQ gateway; its Prefect gateway takes the next one
#: (taken elsewhere: 9 by the tests, 12 by bench.rq_path, 13 by bench.prefect_path).
REDIS_DB = 14
BACKENDS = BACKEND_NAMES
REFERENCES = ("copy", "native")


# -- the backends ------------------------------------------------------------------------


@contextlib.contextmanager
def rq_system(args: argparse.Namespace, extra_env: dict[str, str]) -> Iterator[FigwaySystem]:
    """``figway serve`` and one forking ``figway worker rq``, on ``--redis-db``."""
    config = StackConfig(
        pg_admin_url=args.pg_admin_url,
        redis_url=args.redis_url,
        redis_db=args.redis_db,
        extra_env=extra_env,
    )
    with BenchStack(config) as stack:
        say(f"  figway database {stack.database}, gateway {stack.api_url}, logs in {stack.workdir}")
        stack.start_workers(1, simple=False)
        (pid,) = stack.worker_pids()
        yield FigwaySystem("rq", stack.api_url, pid, rq_roles)


@contextlib.contextmanager
def prefect_system(args: argparse.Namespace, extra_env: dict[str, str]) -> Iterator[FigwaySystem]:
    """A Prefect server, ``figway serve`` on it, and one process worker, on Redis db + 1."""
    config = PrefectStackConfig(
        pg_admin_url=args.pg_admin_url,
        redis_url=args.redis_url,
        redis_db=args.redis_db + 1,
        extra_env=extra_env,
    )
    stack = PrefectBenchStack(config)
    # start_worker asks the server whether the worker is online.
    with stack.as_client(), stack:
        say(
            f"  Prefect server {stack.api_url}, gateway {stack.figway.api_url}, "
            f"logs in {stack.workdir} and {stack.figway.workdir}"
        )
        stack.start_worker()
        if stack.worker is None:
            raise RuntimeError("the Prefect worker did not start")
        yield FigwaySystem("prefect", stack.figway.api_url, stack.worker.popen.pid, prefect_roles)


#: How each backend's stack is started, by backend name.
SYSTEMS: dict[
    str,
    Callable[[argparse.Namespace, dict[str, str]], contextlib.AbstractContextManager[FigwaySystem]],
] = {
    "rq": rq_system,
    "prefect": prefect_system,
}


# -- the schedule ------------------------------------------------------------------------


@dataclass
class Bench:
    """What every phase shares: the options, the database, its sources, the scratch space."""

    args: argparse.Namespace
    database: EtlDatabase
    sources: dict[int, str]
    scratch: Path

    @property
    def artifacts(self) -> Path:
        return self.scratch / "artifacts"

    def extra_env(self) -> dict[str, str]:
        """What every process of a stack gets: the connection secret and the artifact store."""
        return {
            environment_variable(SECRET): self.database.url,
            "FIGWAY_ARTIFACT_URL": str(self.artifacts),
        }


def run_phase(bench: Bench, backend: str) -> list[Sample]:
    """Start one backend's stack; run figway and the references in turn on every row count."""
    args = bench.args
    say(f"[{backend}] starting the stack")
    with SYSTEMS[backend](args, bench.extra_env()) as system:
        runner = FigwayEtl(
            system,
            bench.database,
            bench.artifacts,
            sample_seconds=args.sample_ms / 1_000,
            timeout_seconds=args.timeout,
        )
        try:
            for rows in args.rows:
                runner.register(rows, bench.sources[rows])
            for _ in range(args.warmup):
                warm = runner.run(min(args.rows), 0)
                say(f"[{backend}] warm-up run (not kept): {warm.wall_s:.1f} s")
            return run_rounds(bench, backend, runner)
        finally:
            runner.close()


def run_rounds(bench: Bench, backend: str, runner: FigwayEtl) -> list[Sample]:
    """``repeats`` rounds of every row count on figway and the references, in rotating order."""
    args = bench.args

    def measure(system: str, rows: int, repeat: int) -> Sample:
        source = bench.sources[rows]
        if system == "copy":
            return copy_reference(bench.database, source, rows, repeat, backend)
        if system == "native":
            return native_reference(bench.database, source, rows, repeat, backend, bench.scratch)
        return runner.run(rows, repeat)

    return interleave(
        measure,
        systems=[backend, *args.references],
        items=args.rows,
        repeats=args.repeats,
        progress=lambda sample: say(f"[{backend}] {progress_line(sample)}"),
    )


def progress_line(sample: Sample) -> str:
    line = (
        f"{sample.system:<7} {sample.rows:>9,} rows #{sample.repeat}: {sample.wall_s:6.1f} s "
        f"({sample.rows_per_second:>9,.0f} rows/s)"
    )
    if sample.steps_s:
        line += "; " + ", ".join(f"{step} {sec:.1f} s" for step, sec in sample.steps_s.items())
    if sample.peak_kb is not None:
        line += f"; peak {megabytes(sample.peak_kb):.0f} MB ({sample.peak_role})"
        if sample.system in BACKENDS:
            line += f", tree {megabytes(sample.tree_sum_kb):.0f} MB"
    return line + f"; target {sample.loaded_rows:,} rows: ok"


# -- the command -------------------------------------------------------------------------


def _row_counts(text: str) -> list[int]:
    counts = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"row counts must be positive integers: {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.etl",
        description=__doc__,
        epilog="Needs PostgreSQL and Redis on loopback (`make services`) and psql. "
        "`make bench-etl` runs 100,000 and 1,000,000 rows, 3 repeats: about 3 minutes on 2 "
        "cores; `make bench-etl-10m` 10,000,000 rows once (docs/performance.md says how "
        "long). Results: progress and a Markdown summary on stdout, every sample as JSON in "
        "bench/results/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows",
        type=_row_counts,
        default=[1_000_000],
        help="source rows, comma-separated for several sizes (default: 1000000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per system and size (3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="figway runs of the smallest size per backend before measuring, not kept (1)",
    )
    parser.add_argument(
        "--backends", type=choices(BACKENDS), default=list(BACKENDS), help="rq,prefect"
    )
    parser.add_argument(
        "--references",
        type=choices(REFERENCES),
        default=list(REFERENCES),
        help="copy,native (an empty string for none)",
    )
    parser.add_argument(
        "--sample-ms", type=float, default=20.0, help="RSS sampling interval in ms (20)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one run may take (900)"
    )
    add_service_arguments(
        parser,
        redis_help="Redis server without a db number; --redis-db (RQ) and the next one "
        "(Prefect) are flushed before and after (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-db", type=int, default=REDIS_DB, help="Redis db of the RQ phase (%(default)s)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.sample_ms <= 0:
        parser.error("--repeats must be at least 1, --warmup at least 0, --sample-ms positive")
    if shutil.which("psql") is None and "copy" in args.references:
        parser.error("psql is not on PATH: install it or pass --references native")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    results = new_results(
        {
            "rows": args.rows,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "backends": args.backends,
            "references": args.references,
            "sample_ms": args.sample_ms,
            "transform": TRANSFORM,
        }
    )
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="figway-bench-etl-"))
    say(
        f"ETL benchmark: {', '.join(f'{r:,}' for r in args.rows)} rows, {args.repeats} repeats, "
        f"on {', '.join(args.backends)}, references: {', '.join(args.references) or 'none'}"
    )
    try:
        with EtlDatabase(args.pg_admin_url) as database:
            sources = {}
            for rows in args.rows:
                say(f"seeding {rows:,} rows into {database.name}")
                sources[rows] = database.seed(rows)
            results["source_mb"] = {rows: database.megabytes(t) for rows, t in sources.items()}
            results["environment"] = _environment(database.url, args.redis_url)
            bench = Bench(args, database, sources, scratch)
            samples: list[Sample] = []
            for backend in args.backends:
                phase_began = time.perf_counter()
                samples += run_phase(bench, backend)
                results.setdefault("phase_seconds", {})[backend] = time.perf_counter() - phase_began
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["samples"] = [asdict(sample) for sample in samples]
    results["summary"] = summarise(samples)
    results["memory_target"] = memory_verdicts(samples, args.backends)
    finish_results(results, began)
    say(f"done in {results['elapsed_seconds']:.0f} s; processes stopped, databases dropped")
    return results


def _environment(database_url: str, redis_url: str) -> dict[str, Any]:
    with Redis.from_url(redis_url) as redis:
        return environment(
            database_url,
            redis,
            extra_packages=("pyarrow", "duckdb", "prefect", "psutil"),
        )


def main(argv: list[str] | None = None) -> int:
    return command(parse_args(argv), run, render_markdown, name="etl")


if __name__ == "__main__":
    sys.exit(main())
