"""Part (b): end-to-end time of a DAG through figway and natively on RQ, on the same workers.

One sample is the time from just before the submission (this process's wall
clock) until the DAG's last node finished (the worker's wall clock, same host):

- figway: ``POST /workflow_runs/``, then ``GET /workflow_runs/{id}`` every
  ``poll_seconds`` until the run is terminal; the end is the run's
  ``finished_at`` as recorded in the database by the last node.
- native: ``enqueue_many`` of the same DAG of :func:`bench.jobs.noop` jobs on
  the same queue; the end is the latest ``ended_at`` of the sink jobs, read from
  Redis every ``poll_seconds``.

For both, RQ's own timestamps of every job give two more figures: the mean
time inside a job (``started_at`` to ``ended_at``, in the work horse) and the
mean *release gap* (the last upstream job's ``ended_at`` to the job's
``started_at``: dependency release, dequeue and, for the forking worker, the fork).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from redis import Redis
from rq.job import Job
from rq.registry import StartedJobRegistry

from backends.rq.jobs import job_id_for
from bench.native import QUEUE, enqueue_dag, fetch_jobs, native_job_id, queue, wait_for_jobs
from bench.submit import RUN_TERMINAL, run_body
from bench.workflows import BenchDag

__all__ = ["EndToEndRunner", "EndToEndSample", "summarise_samples"]


@dataclass(frozen=True)
class EndToEndSample:
    mode: str  # worker kind: "fork" (RQ's Worker) or "simple" (SimpleWorker)
    dag: str
    system: str  # "figway" or "native"
    repeat: int  # 0 for the warm-up runs (not kept)
    seconds: float  # submission start -> last node finished
    submit_seconds: float  # the POST, or the enqueue_many call
    in_job_mean_ms: float
    release_gap_mean_ms: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class EndToEndRunner:
    """Runs single DAGs through figway or natively, with the workers already started.

    A :class:`bench.harness.Runner` of the workers of ``mode``.
    """

    api_url: str
    redis: Redis
    mode: str
    timeout_seconds: float = 300.0
    figway_poll_seconds: float = 0.5
    native_poll_seconds: float = 0.05

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.api_url, timeout=30.0)
        self._queue = queue(self.redis)

    def close(self) -> None:
        self._client.close()

    def run(self, system: str, dag: BenchDag, repeat: int) -> EndToEndSample:
        """One run of ``dag`` on ``system``; returns once the workers are idle again."""
        result = self.figway(dag) if system == "figway" else self.native(dag)
        self.wait_idle()
        return EndToEndSample(
            mode=self.mode,
            dag=dag.workflow_id,
            system=system,
            repeat=repeat,
            seconds=result.pop("seconds"),
            submit_seconds=result.pop("submit_seconds"),
            in_job_mean_ms=result.pop("in_job_mean_ms"),
            release_gap_mean_ms=result.pop("release_gap_mean_ms"),
            extra=result,
        )

    def line(self, sample: EndToEndSample, repeats: int) -> str:
        rep = "warm-up" if sample.repeat == 0 else f"rep {sample.repeat}/{repeats}"
        return (
            f"  {sample.mode:<6} {sample.dag:<20} {rep:<9} {sample.system:<6} "
            f"{sample.seconds:7.3f} s  (in-job {sample.in_job_mean_ms:6.1f} ms, "
            f"release gap {sample.release_gap_mean_ms:6.1f} ms)"
        )

    def figway(self, dag: BenchDag) -> dict[str, float]:
        body = {**run_body(dag), "job_id": "bench-e2e"}
        began_wall = time.time()
        began = time.perf_counter()
        response = self._client.post("/workflow_runs/", json=body)
        submit_seconds = time.perf_counter() - began
        if response.status_code != 201:
            raise RuntimeError(
                f"POST /workflow_runs/ answered {response.status_code}: {response.text}"
            )
        run_id: str = response.json()["job_run_id"]
        run, polls, get_ms = self._poll_run(run_id)
        if run["status"] != "succeeded":
            failed = {n: v["error"] for n, v in run["nodes"].items() if v["status"] != "succeeded"}
            raise RuntimeError(f"figway run {run_id} ended {run['status']}: {failed}")
        finished = datetime.fromisoformat(run["finished_at"])
        created = datetime.fromisoformat(run["created_at"])
        job_ids = {node: job_id_for(run_id, node) for node in dag.upstream}
        # The run is recorded finished inside the last job; wait until RQ has closed that job too.
        rq_end, in_job, gap = self._jobs_done(dag, job_ids, timeout=30.0)
        return {
            "seconds": finished.timestamp() - began_wall,
            "submit_seconds": submit_seconds,
            "in_job_mean_ms": in_job,
            "release_gap_mean_ms": gap,
            "server_seconds": (finished - created).total_seconds(),
            "rq_end_seconds": rq_end.timestamp() - began_wall,
            "polls": float(polls),
            "get_mean_ms": statistics.fmean(get_ms),
        }

    def native(self, dag: BenchDag) -> dict[str, float]:
        run_id = uuid.uuid4().hex[:12]
        job_ids = {node: native_job_id(run_id, node) for node in dag.upstream}
        began_wall = time.time()
        began = time.perf_counter()
        enqueue_dag(self._queue, dag, run_id)
        submit_seconds = time.perf_counter() - began
        end, in_job, gap = self._jobs_done(dag, job_ids, timeout=self.timeout_seconds)
        return {
            "seconds": end.timestamp() - began_wall,
            "submit_seconds": submit_seconds,
            "in_job_mean_ms": in_job,
            "release_gap_mean_ms": gap,
        }

    def _jobs_done(
        self, dag: BenchDag, job_ids: Mapping[str, str], *, timeout: float
    ) -> tuple[datetime, float, float]:
        """Wait for the DAG's sink jobs; (their latest end, mean in-job ms, mean release gap ms)."""
        end = wait_for_jobs(
            self.redis,
            [job_ids[node] for node in dag.sinks()],
            timeout=timeout,
            poll_seconds=self.native_poll_seconds,
        )
        in_job, gap = _job_timings(dag, fetch_jobs(self.redis, list(job_ids.values())), job_ids)
        return end, in_job, gap

    def wait_idle(self, settle_seconds: float = 0.3, timeout: float = 60.0) -> None:
        """Wait until the queue is empty and no job is running, then a little longer."""
        started = StartedJobRegistry(QUEUE, connection=self.redis)
        deadline = time.monotonic() + timeout
        while self._queue.count or started.count:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not go idle")
            time.sleep(0.05)
        time.sleep(settle_seconds)

    def _poll_run(self, run_id: str) -> tuple[dict[str, Any], int, list[float]]:
        deadline = time.monotonic() + self.timeout_seconds
        polls = 0
        get_ms: list[float] = []
        while True:
            time.sleep(self.figway_poll_seconds)
            began = time.perf_counter()
            response = self._client.get(f"/workflow_runs/{run_id}")
            get_ms.append((time.perf_counter() - began) * 1_000)
            polls += 1
            response.raise_for_status()
            run: dict[str, Any] = response.json()
            if run["status"] in RUN_TERMINAL:
                return run, polls, get_ms
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"figway run {run_id} still {run['status']} after {self.timeout_seconds:.0f} s"
                )


def _job_timings(
    dag: BenchDag, jobs: Mapping[str, Job], job_ids: Mapping[str, str]
) -> tuple[float, float]:
    """Mean in-job time and mean release gap (ms) from RQ's timestamps of a DAG's jobs."""
    started: dict[str, datetime] = {}
    ended: dict[str, datetime] = {}
    for node, job_id in job_ids.items():
        job = jobs.get(job_id)
        if job is None or job.started_at is None or job.ended_at is None:
            raise RuntimeError(f"RQ has no timings for job {job_id} (node {node})")
        started[node], ended[node] = job.started_at, job.ended_at
    in_job = [(ended[n] - started[n]).total_seconds() * 1_000 for n in dag.upstream]
    gaps = [
        (started[n] - max(ended[up] for up in ups)).total_seconds() * 1_000
        for n, ups in dag.upstream.items()
        if ups
    ]
    return statistics.fmean(in_job), statistics.fmean(gaps) if gaps else 0.0


def summarise_samples(samples: Sequence[EndToEndSample]) -> list[dict[str, Any]]:
    """One row per (worker mode, DAG): medians and ranges of both systems and their ratio."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((s.mode, s.dag) for s in samples))
    for mode, dag in keys:
        row: dict[str, Any] = {"mode": mode, "dag": dag}
        for system in ("figway", "native"):
            mine = [s for s in samples if s.mode == mode and s.dag == dag and s.system == system]
            seconds = [s.seconds for s in mine]
            row[system] = {
                "runs": len(mine),
                "median_s": statistics.median(seconds),
                "min_s": min(seconds),
                "max_s": max(seconds),
                "in_job_mean_ms": statistics.median(s.in_job_mean_ms for s in mine),
                "release_gap_mean_ms": statistics.median(s.release_gap_mean_ms for s in mine),
                "submit_median_ms": statistics.median(s.submit_seconds for s in mine) * 1_000,
            }
        row["ratio"] = row["figway"]["median_s"] / row["native"]["median_s"]
        rows.append(row)
    return rows
