"""What the ETL benchmark measures: its database, its samples, the references, figway's runs.

- :class:`EtlDatabase`: a PostgreSQL database of the benchmark's own for the
  source tables (generated) and the targets every system loads into;
- :func:`copy_reference` and :func:`native_reference`: ``psql \\copy`` piped into
  ``psql \\copy``, and :mod:`bench.etl_native` in one plain Python process;
- :class:`FigwayEtl`: the workflow through a running gateway and its worker,
  with the worker's process tree sampled (:class:`bench.memory.TreeSampler`)
  from just before the POST until the process that ran the nodes has exited.

Every sample checks the target's row count against the source: a run that
loaded nothing stops the benchmark.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench.etl_native import TRANSFORM
from bench.memory import Describer, MemoryPeaks, TreeSampler
from bench.stack import create_database, descendants, drop_database, rss_kb
from bench.submit import wait_for_run

__all__ = [
    "NODES",
    "SECRET",
    "EtlDatabase",
    "FigwayEtl",
    "FigwaySystem",
    "Sample",
    "copy_reference",
    "native_reference",
    "prefect_roles",
    "rq_roles",
    "workflow",
]

#: The secret the workflow's connections name; every process gets FIGWAY_SECRET_BENCH_ETL_PG.
SECRET = "bench-etl-pg"
NODES = ("extract", "transform", "load")

#: Six columns of mixed types, the same rows for the same count every time.
SOURCE_QUERY = """
CREATE TABLE {table} AS
SELECT g AS id,
       ((g * 7919) % 100000 + 1)::integer AS customer_id,
       ((g * 37) % 1000000 / 100.0)::numeric(10, 2) AS amount,
       date '2026-01-01' + (g % 365)::integer AS ordered_on,
       (ARRAY['web', 'store', 'phone'])[g % 3 + 1] AS channel,
       CASE WHEN g % 10 = 0 THEN NULL ELSE md5(g::text) END AS note
FROM generate_series(1::bigint, {rows}) AS g
"""


# -- the bench's own database: sources and targets ---------------------------------------


class EtlDatabase:
    """A PostgreSQL database of the benchmark's own for its source and target tables.

    Created on entry, dropped (with its connections) on exit, whatever happened.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"figway_bench_etl_{uuid.uuid4().hex[:8]}"
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def __enter__(self) -> EtlDatabase:
        create_database(self.admin_url, self.name)
        return self

    def __exit__(self, *exc_info: object) -> None:
        drop_database(self.admin_url, self.name)

    def seed(self, rows: int) -> str:
        """Create the source table of ``rows`` rows; returns its name."""
        table = f"etl_source_{rows}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(
                sql.SQL(SOURCE_QUERY).format(table=sql.Identifier(table), rows=sql.Literal(rows))
            )
            # Freezing now sets every hint bit: the first extract would otherwise write the
            # whole table back while reading it, and be slower than the others.
            connection.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(sql.Identifier(table)))
        return table

    def count(self, table: str) -> int:
        """Rows in ``table``; 0 when it does not exist."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            exists = connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = connection.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            return int(row[0]) if row else 0

    def megabytes(self, table: str) -> float:
        with psycopg.connect(self.url, autocommit=True) as connection:
            row = connection.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
            return int(row[0]) / 10**6 if row else 0.0

    def recreate(self, table: str, *, like: str | None = None) -> None:
        """Drop ``table``; with ``like``, create it empty with that table's columns."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            if like is not None:
                connection.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {})").format(
                        sql.Identifier(table), sql.Identifier(like)
                    )
                )


# -- samples -----------------------------------------------------------------------------


@dataclass
class Sample:
    """One measured run of one system on one row count."""

    system: str  # "copy", "native", "rq" or "prefect"
    rows: int
    repeat: int
    phase: str  # the backend whose stack was up when it ran
    wall_s: float
    loaded_rows: int
    #: Seconds per node (figway) or per step (native); empty for copy.
    steps_s: dict[str, float] = field(default_factory=dict)
    #: POST -> the run's first node started (figway only: queueing, pick-up).
    start_delay_s: float | None = None
    #: Largest single process, its role, the tree's sum, the kernel's high-water mark.
    peak_kb: int | None = None
    peak_role: str | None = None
    #: RssAnon (heap) of that process at its peak; the rest is mapped files (library code).
    peak_anon_kb: int | None = None
    tree_sum_kb: int | None = None
    hwm_kb: int | None = None
    worker_idle_kb: int | None = None
    #: Per node: the largest process and the tree's sum while it ran.
    node_peaks: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    sampler: dict[str, float] = field(default_factory=dict)
    artifact_bytes: dict[str, int] = field(default_factory=dict)
    node_logs: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.wall_s


def check_loaded(database: EtlDatabase, table: str, rows: int, system: str) -> int:
    """The target's row count, which must equal the source's: anything else stops the run."""
    loaded = database.count(table)
    if loaded != rows:
        raise RuntimeError(f"{system}: {table} holds {loaded} rows, the source {rows}")
    return loaded


# -- the references ----------------------------------------------------------------------


def copy_reference(
    database: EtlDatabase, source: str, rows: int, repeat: int, phase: str
) -> Sample:
    """``psql \\copy (select * from source) to stdout | psql \\copy target from stdin``."""
    target = f"etl_copy_{rows}"
    database.recreate(target, like=source)
    psql = ["psql", database.url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    began = time.perf_counter()
    extract = subprocess.Popen(
        [*psql, f"\\copy (select * from {source}) to stdout"], stdout=subprocess.PIPE
    )
    load = subprocess.run(
        [*psql, f"\\copy {target} from stdin"],
        stdin=extract.stdout,
        capture_output=True,
        check=False,
    )
    if extract.stdout is not None:
        extract.stdout.close()  # the loader has it; psql's extract gets SIGPIPE if it died
    extract.wait()
    wall = time.perf_counter() - began
    if extract.returncode != 0 or load.returncode != 0:
        raise RuntimeError(f"psql \\copy failed ({extract.returncode}, {load.returncode}): {load}")
    loaded = check_loaded(database, target, rows, "copy")
    return Sample("copy", rows, repeat, phase, wall, loaded)


def native_reference(
    database: EtlDatabase, source: str, rows: int, repeat: int, phase: str, scratch: Path
) -> Sample:
    """The same extract -> Parquet -> transform -> load in one plain Python process."""
    target = f"etl_native_{rows}"
    database.recreate(target)
    workdir = Path(tempfile.mkdtemp(prefix="native-", dir=scratch))
    try:
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.etl_native", database.url, source, target, str(workdir)],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - began
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench.etl_native failed:\n{done.stdout}{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if set(report["rows"].values()) != {rows}:
        raise RuntimeError(f"native: rows per step {report['rows']}, the source has {rows}")
    loaded = check_loaded(database, target, rows, "native")
    peak = int(report["peak_rss_kb"])
    return Sample(
        "native",
        rows,
        repeat,
        phase,
        wall,
        loaded,
        steps_s=report["seconds"],
        peak_kb=peak,
        peak_role="the script (ru_maxrss)",
        tree_sum_kb=peak,
        hwm_kb=peak,
    )


# -- figway ------------------------------------------------------------------------------


def workflow(rows: int, source: str, backend: str) -> dict[str, Any]:
    """The body of ``PUT /workflows/bench_etl_<rows>``."""
    return {
        "workflow_id": f"bench_etl_{rows}",
        "workspace_id": "bench",
        "folder_id": "bench",
        "description": f"{rows} rows: PostgreSQL -> DuckDB -> PostgreSQL",
        "tags": ["benchmark", "etl"],
        "backend": backend,
        # postgres_* nodes choose the postgres pool by default; the bench's workers serve
        # the default one (RQ: all queues; Prefect: default-worker-pool only).
        "pool": "default",
        "nodes": {
            "extract": {
                "type": "postgres_extract",
                "config": {"connection": f"secret:{SECRET}", "query": f"select * from {source}"},
            },
            "transform": {"type": "sql_transform", "config": {"query": TRANSFORM}},
            "load": {
                "type": "postgres_load",
                "config": {
                    "connection": f"secret:{SECRET}",
                    "table": f"etl_target_{rows}",
                    "mode": "replace",
                },
            },
        },
        "dependencies": {"extract": [], "transform": ["extract"], "load": ["transform"]},
    }


@dataclass
class FigwaySystem:
    """A running gateway and its one worker, whichever the backend."""

    backend: str
    api_url: str
    worker_pid: int
    #: Given the worker's children before a run, names the processes of its tree.
    roles: Callable[[set[int]], Describer]


def rq_roles(standing: set[int]) -> Describer:
    # Without setproctitle every fork keeps the worker's command line; the children that
    # were there before the run are RQ's scheduler, the others work horses.
    def describe(pid: int, is_root: bool, cmdline: Sequence[str]) -> str:
        if is_root:
            return "worker (figway worker rq)"
        return "rq scheduler (fork)" if pid in standing else "work horse (fork)"

    return describe


def prefect_roles(standing: set[int]) -> Describer:
    return _prefect_role


def _prefect_role(pid: int, is_root: bool, cmdline: Sequence[str]) -> str:
    if is_root:
        return "worker (prefect worker start)"
    if "prefect.engine" in " ".join(cmdline):
        return "flow run (python -m prefect.engine)"
    return Path(cmdline[0]).name if cmdline else str(pid)


class FigwayEtl:
    """Runs the workflow through a gateway and measures it; one instance per backend phase."""

    def __init__(
        self,
        system: FigwaySystem,
        database: EtlDatabase,
        artifacts: Path,
        *,
        sample_seconds: float,
        timeout_seconds: float,
    ) -> None:
        self.system = system
        self.database = database
        self.artifacts = artifacts
        self.sample_seconds = sample_seconds
        self.timeout_seconds = timeout_seconds
        self._http = httpx.Client(base_url=system.api_url, timeout=60.0)

    def close(self) -> None:
        self._http.close()

    def register(self, rows: int, source: str) -> None:
        body = workflow(rows, source, self.system.backend)
        response = self._http.put(f"/workflows/{body['workflow_id']}", json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"PUT /workflows: {response.status_code} {response.text}")

    def run(self, rows: int, repeat: int) -> Sample:
        backend = self.system.backend
        target = f"etl_target_{rows}"
        self.database.recreate(target)  # so a run that loads nothing cannot pass the count
        # The worker's children before the run (RQ's scheduler) are not the run's.
        standing = set(descendants(self.system.worker_pid))
        describe = self.system.roles(standing)
        idle_kb = rss_kb(self.system.worker_pid)
        body = {
            "workspace_id": "bench",
            "folder_id": "bench",
            "workflow_id": f"bench_etl_{rows}",
            "job_id": "bench-etl",
            "job_run_id": f"etl-{backend}-{rows}-{repeat}-{uuid.uuid4().hex[:6]}",
        }
        with TreeSampler(
            self.system.worker_pid, interval=self.sample_seconds, describe=describe
        ) as sampler:
            began = time.time()
            response = self._http.post("/workflow_runs/", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /workflow_runs/: {response.status_code} {response.text}")
            # The figures come from the run's own timestamps: polling slower changes none.
            run = wait_for_run(
                self._http,
                body["job_run_id"],
                timeout=self.timeout_seconds,
                poll_seconds=0.5,
                detail=lambda: self._node_logs(body["job_run_id"]),
            )
            # Keep sampling until the work horse or flow-run process has gone: it may still
            # hold its memory (Prefect's flow ends a second after figway's last node).
            self._wait_idle(standing)
        try:
            sample = self._sample(run, rows, repeat, began, sampler.result(), standing)
        finally:
            shutil.rmtree(self.artifacts / "runs", ignore_errors=True)  # keep the disk flat
        sample.worker_idle_kb = idle_kb
        return sample

    def _sample(
        self,
        run: dict[str, Any],
        rows: int,
        repeat: int,
        began: float,
        memory: MemoryPeaks,
        standing: set[int],
    ) -> Sample:
        backend = self.system.backend
        logs = self._node_logs(run["job_run_id"])
        if run["status"] != "succeeded":
            errors = {node: n["error"] for node, n in run["nodes"].items() if n["error"]}
            raise RuntimeError(
                f"{backend} run {run['job_run_id']} {run['status']}: {errors} {logs}"
            )
        artifacts = {node: run["nodes"][node]["output"]["artifact"] for node in NODES[:2]}
        reported = {node: artifact["rows"] for node, artifact in artifacts.items()}
        reported["load"] = run["nodes"]["load"]["output"]["rows"]
        if set(reported.values()) != {rows}:
            raise RuntimeError(f"{backend}: rows per node {reported}, the source has {rows}")
        loaded = check_loaded(self.database, f"etl_target_{rows}", rows, backend)
        spans = {
            node: (_ts(run["nodes"][node]["started_at"]), _ts(run["nodes"][node]["finished_at"]))
            for node in NODES
        }
        sample = Sample(
            backend,
            rows,
            repeat,
            backend,
            wall_s=_ts(run["finished_at"]) - began,
            loaded_rows=loaded,
            steps_s={node: end - start for node, (start, end) in spans.items()},
            start_delay_s=min(start for start, _ in spans.values()) - began,
            artifact_bytes={node: int(artifact["bytes"]) for node, artifact in artifacts.items()},
            node_logs=logs,
        )
        # What a node held is what the process running it held, not its idle parent.
        self._add_memory(sample, memory, spans, bystanders={self.system.worker_pid, *standing})
        return sample

    @staticmethod
    def _add_memory(
        sample: Sample,
        memory: MemoryPeaks,
        spans: dict[str, tuple[float, float]],
        *,
        bystanders: set[int],
    ) -> None:
        largest = memory.largest
        sample.peak_kb = largest.peak_rss_kb
        sample.peak_role = largest.role
        sample.peak_anon_kb = largest.anon_kb
        sample.tree_sum_kb = memory.tree_sum_kb
        workers = [p.hwm_kb or 0 for p in memory.processes if p.pid not in bystanders]
        sample.hwm_kb = max(workers, default=0) or None
        sample.node_peaks = {
            node: asdict(memory.window(start, end, exclude=bystanders))
            for node, (start, end) in spans.items()
        }
        sample.processes = [asdict(process) for process in memory.processes]
        sample.sampler = {
            "samples": memory.samples,
            "mean_interval_ms": memory.mean_interval_s * 1e3,
            "cpu_s": memory.cpu_s,
        }

    def _node_logs(self, run_id: str) -> list[str]:
        """The nodes' own summary lines ("extracted N rows ... in X s (R rows/s)")."""
        response = self._http.get(f"/workflow_runs/{run_id}/logs")
        if response.status_code != 200:
            return []
        return [
            f"{line['node']}: {line['message']}"
            for line in response.json()["lines"]
            if line["node"] and (" rows " in line["message"] or line["level"] != "INFO")
        ]

    def _wait_idle(self, standing: set[int], timeout: float = 60.0) -> None:
        """Wait until the worker has no child but those in ``standing``."""
        deadline = time.monotonic() + timeout
        while busy := set(descendants(self.system.worker_pid)) - standing:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker still has children {sorted(busy)}")
            time.sleep(0.05)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
