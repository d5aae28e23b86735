"""End to end on Prefect: a DAG through figway, and the same DAG as a plain Prefect flow.

Both go through the same path: a flow run created from a deployment on
``default-worker-pool``, picked up by the one ``prefect worker start`` process
(it polls every ``PREFECT_WORKER_QUERY_SECONDS``), run in a fresh
``python -m prefect.engine`` process.

- figway: ``POST /workflow_runs/`` (the gateway creates a flow run of
  ``figway-run/figway-default``), then ``GET /workflow_runs/{id}`` every
  ``figway_poll_seconds`` until the run is terminal, then its flow run (named
  after the run) is read from Prefect until it is final.
- native: ``create_flow_run_from_deployment`` of the ``bench-native`` deployment
  (:mod:`bench.prefect_native`) with the DAG as its parameter, then the flow run
  is read every ``prefect_poll_seconds`` until it is final.

From Prefect's records of the flow run, for both (this host's clock throughout):

- ``total``: just before the submission -> the flow run's ``end_time``;
- ``pick-up``: just before the submission -> the flow run's ``start_time``
  (the worker's poll, ``python -m prefect.engine`` starting and loading the flow);
- ``in-flow``: ``start_time`` -> ``end_time``, the DAG itself plus the flow's
  own start and end (a sync flow ends with a ~1 s tail; both flows are sync).

From Prefect's task runs (they reach the API through events, seconds after the
flow ends; the runner waits for them before the next sample, so samples do not
overlap): the mean time inside a task, and the mean *release gap* (the last
upstream task's end -> the task's start: the flow noticing, submitting, the
thread pool starting it), and the flow's *head* (flow start -> first task
start: for figway, building its node runtime and loading the run's plan) and
*tail* (last task end -> flow end). figway adds its own view: the run's ``finished_at``
(recorded by the last node) from the POST and from the run's ``created_at``,
and the mean time its node runtime spends per node.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from bench.prefect_stack import PrefectBenchStack
from bench.submit import run_body, wait_for_run
from bench.workflows import BenchDag

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, TaskRun

__all__ = ["PrefectEndToEnd", "PrefectSample", "summarise_samples"]

#: How long a sample may wait for its task runs to reach the API and its process to exit.
SETTLE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class PrefectSample:
    dag: str
    system: str  # "figway" or "native"
    repeat: int  # 0 for the warm-up runs (not kept)
    nodes: int
    total_s: float
    pickup_s: float
    in_flow_s: float
    submit_ms: float  # the POST, or the create_flow_run_from_deployment call
    # From the task runs; None when they did not all reach the API in time.
    task_mean_ms: float | None
    task_gap_mean_ms: float | None
    head_ms: float | None  # flow run start -> first task start
    tail_ms: float | None  # last task end -> flow run end
    extra: dict[str, float] = field(default_factory=dict)


class PrefectEndToEnd:
    """Runs single DAGs through figway or as native flows; the worker must be running."""

    def __init__(
        self,
        stack: PrefectBenchStack,
        native_deployment_id: Any,
        *,
        timeout_seconds: float = 300.0,
        figway_poll_seconds: float = 0.5,
        prefect_poll_seconds: float = 0.2,
    ) -> None:
        self.stack = stack
        self.native_deployment_id = native_deployment_id
        self.timeout_seconds = timeout_seconds
        self.figway_poll_seconds = figway_poll_seconds
        self.prefect_poll_seconds = prefect_poll_seconds
        self._http = httpx.Client(base_url=stack.figway.api_url, timeout=30.0)
        self._prefect = stack.client().__enter__()

    def close(self) -> None:
        self._http.close()
        self._prefect.__exit__(None, None, None)

    # -- one run of each kind ----------------------------------------------------------

    def run(self, system: str, dag: BenchDag, repeat: int) -> PrefectSample:
        """One run of ``dag`` on ``system`` (a :class:`bench.harness.Runner`)."""
        return self.figway(dag, repeat) if system == "figway" else self.native(dag, repeat)

    def line(self, sample: PrefectSample, repeats: int) -> str:
        return _line(sample, repeats)

    def figway(self, dag: BenchDag, repeat: int) -> PrefectSample:
        body = {**run_body(dag), "job_id": "bench-e2e"}
        began_wall = time.time()
        began = time.perf_counter()
        response = self._http.post("/workflow_runs/", json=body)
        submit_ms = (time.perf_counter() - began) * 1_000
        if response.status_code != 201:
            raise RuntimeError(
                f"POST /workflow_runs/ answered {response.status_code}: {response.text}"
            )
        run_id: str = response.json()["job_run_id"]
        run = self._poll_figway(run_id)
        if run["status"] != "succeeded":
            failed = {n: v["error"] for n, v in run["nodes"].items() if v["status"] != "succeeded"}
            raise RuntimeError(f"figway run {run_id} ended {run['status']}: {failed}")
        flow_run = self._poll_flow_run(lambda: self._figway_flow_run(run_id), f"figway {run_id}")
        finished = datetime.fromisoformat(run["finished_at"]).timestamp()
        created = datetime.fromisoformat(run["created_at"]).timestamp()
        node_ms = [
            (
                datetime.fromisoformat(node["finished_at"])
                - datetime.fromisoformat(node["started_at"])
            ).total_seconds()
            * 1_000
            for node in run["nodes"].values()
        ]
        extra = {
            "run_done_s": finished - began_wall,
            "run_server_s": finished - created,
            "node_mean_ms": statistics.fmean(node_ms),
            "flow_tail_s": _ts(flow_run.end_time) - finished,
        }
        return self._sample(dag, "figway", repeat, began_wall, submit_ms, flow_run, extra)

    def native(self, dag: BenchDag, repeat: int) -> PrefectSample:
        from bench.prefect_native import parameters

        name = f"native-{dag.workflow_id}-{uuid.uuid4().hex[:8]}"
        began_wall = time.time()
        began = time.perf_counter()
        created = self._prefect.create_flow_run_from_deployment(
            self.native_deployment_id,
            parameters=parameters(dag.upstream),
            name=name,
            tags=["bench-native"],
        )
        submit_ms = (time.perf_counter() - began) * 1_000
        flow_run = self._poll_flow_run(
            lambda: self._prefect.read_flow_run(created.id), f"native {name}"
        )
        return self._sample(dag, "native", repeat, began_wall, submit_ms, flow_run, {})

    # -- helpers -----------------------------------------------------------------------

    def _sample(
        self,
        dag: BenchDag,
        system: str,
        repeat: int,
        began_wall: float,
        submit_ms: float,
        flow_run: FlowRun,
        extra: dict[str, float],
    ) -> PrefectSample:
        state = flow_run.state
        if state is None or state.type.value != "COMPLETED":
            raise RuntimeError(f"{system} flow run {flow_run.name} ended {state}")
        start, end = _ts(flow_run.start_time), _ts(flow_run.end_time)
        tasks = self._settle(dag, flow_run)
        return PrefectSample(
            dag=dag.workflow_id,
            system=system,
            repeat=repeat,
            nodes=dag.size,
            total_s=end - began_wall,
            pickup_s=start - began_wall,
            in_flow_s=end - start,
            submit_ms=submit_ms,
            task_mean_ms=tasks.in_task_mean_ms if tasks else None,
            task_gap_mean_ms=tasks.gap_mean_ms if tasks else None,
            head_ms=(tasks.first_start - start) * 1_000 if tasks else None,
            tail_ms=(end - tasks.last_end) * 1_000 if tasks else None,
            extra=extra,
        )

    def _poll_figway(self, run_id: str) -> dict[str, Any]:
        return wait_for_run(
            self._http,
            run_id,
            timeout=self.timeout_seconds,
            poll_seconds=self.figway_poll_seconds,
            detail=self._logs,
        )

    def _figway_flow_run(self, run_id: str) -> FlowRun | None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterName,
            FlowRunFilterTags,
        )

        runs = self._prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[run_id]), tags=FlowRunFilterTags(all_=["figway"])
            )
        )
        if len(runs) > 1:
            raise RuntimeError(f"figway run {run_id} has {len(runs)} flow runs")
        return runs[0] if runs else None

    def _poll_flow_run(self, read: Callable[[], FlowRun | None], what: str) -> FlowRun:
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            flow_run = read()
            if (
                flow_run is not None
                and flow_run.state is not None
                and flow_run.state.is_final()
                and flow_run.end_time is not None
            ):
                return flow_run
            if time.monotonic() > deadline:
                state = flow_run.state if flow_run is not None else "no flow run"
                raise TimeoutError(f"{what}: flow run still {state}: {self._logs()}")
            time.sleep(self.prefect_poll_seconds)

    def _settle(self, dag: BenchDag, flow_run: FlowRun) -> TaskTimings | None:
        """Wait for the flow-run process to exit and every task run to reach the API.

        Returns the task runs' timings, or None when they were still incomplete
        after :data:`SETTLE_TIMEOUT_SECONDS`.
        """
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        timings: TaskTimings | None = None
        while time.monotonic() < deadline:
            if timings is None:
                timings = _task_timings(dag, self._task_runs(flow_run))
            if timings is not None and not self.stack.worker_busy():
                break
            time.sleep(0.25)
        return timings

    def _task_runs(self, flow_run: FlowRun) -> list[TaskRun]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found: list[TaskRun] = []
        while True:  # the API returns at most 200 rows a call
            page = self._prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                limit=200,
                offset=len(found),
            )
            found += page
            if len(page) < 200:
                return found

    def _logs(self) -> str:
        worker = self.stack.worker
        return f"\n--- worker log ---\n{worker.tail()}" if worker is not None else ""


def _ts(value: datetime | None) -> float:
    if value is None:
        raise RuntimeError("Prefect recorded no time")
    return value.timestamp()


@dataclass(frozen=True)
class TaskTimings:
    in_task_mean_ms: float  # task run start -> end, mean over the nodes
    gap_mean_ms: float  # last upstream task's end -> the task's start, mean over the nodes
    first_start: float  # epoch seconds
    last_end: float


def _task_timings(dag: BenchDag, task_runs: Sequence[TaskRun]) -> TaskTimings | None:
    """The task runs' timings, once every node's task run is completed (else None)."""
    by_node: dict[str, TaskRun] = {}
    for task_run in task_runs:
        by_node[task_run.name] = task_run
    complete = len(by_node) == dag.size and all(
        t.state_type is not None
        and t.state_type.value == "COMPLETED"
        and t.start_time is not None
        and t.end_time is not None
        for t in by_node.values()
    )
    if not complete or set(by_node) != set(dag.upstream):
        return None
    start = {node: _ts(t.start_time) for node, t in by_node.items()}
    end = {node: _ts(t.end_time) for node, t in by_node.items()}
    in_task = [(end[n] - start[n]) * 1_000 for n in dag.upstream]
    gaps = [
        (start[n] - max(end[up] for up in ups)) * 1_000 for n, ups in dag.upstream.items() if ups
    ]
    return TaskTimings(
        in_task_mean_ms=statistics.fmean(in_task),
        gap_mean_ms=statistics.fmean(gaps) if gaps else 0.0,
        first_start=min(start.values()),
        last_end=max(end.values()),
    )


def _line(sample: PrefectSample, repeats: int) -> str:
    rep = "warm-up" if sample.repeat == 0 else f"rep {sample.repeat}/{repeats}"
    tasks = (
        f"task {sample.task_mean_ms:5.1f} ms, gap {sample.task_gap_mean_ms:5.1f} ms, "
        f"head {sample.head_ms:4.0f} ms, tail {sample.tail_ms:4.0f} ms"
        if sample.task_mean_ms is not None
        and sample.task_gap_mean_ms is not None
        and sample.head_ms is not None
        and sample.tail_ms is not None
        else "task runs incomplete"
    )
    return (
        f"  {sample.dag:<20} {rep:<9} {sample.system:<6} total {sample.total_s:6.2f} s  "
        f"pick-up {sample.pickup_s:5.2f} s  in-flow {sample.in_flow_s:6.2f} s  ({tasks})"
    )


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise_samples(samples: Sequence[PrefectSample]) -> list[dict[str, Any]]:
    """One row per DAG: both systems' medians and ranges, the ratios and the per-node overhead."""
    rows: list[dict[str, Any]] = []
    for dag in dict.fromkeys(s.dag for s in samples):
        row: dict[str, Any] = {"dag": dag}
        for system in ("figway", "native"):
            mine = [s for s in samples if s.dag == dag and s.system == system]
            row["nodes"] = mine[0].nodes
            figures: dict[str, Any] = {
                "runs": len(mine),
                "total_s": _spread([s.total_s for s in mine]),
                "pickup_s": _spread([s.pickup_s for s in mine]),
                "in_flow_s": _spread([s.in_flow_s for s in mine]),
                "submit_ms": statistics.median(s.submit_ms for s in mine),
                "task_mean_ms": _median([s.task_mean_ms for s in mine]),
                "task_gap_mean_ms": _median([s.task_gap_mean_ms for s in mine]),
                "head_ms": _median([s.head_ms for s in mine]),
                "tail_ms": _median([s.tail_ms for s in mine]),
            }
            extras: Mapping[str, list[float]] = {
                key: [s.extra[key] for s in mine] for key in mine[0].extra
            }
            figures.update({key: statistics.median(v) for key, v in extras.items()})
            row[system] = figures
        figway, native = row["figway"], row["native"]
        row["in_flow_ratio"] = figway["in_flow_s"]["median"] / native["in_flow_s"]["median"]
        row["total_ratio"] = figway["total_s"]["median"] / native["total_s"]["median"]
        row["per_node_overhead_ms"] = (
            (figway["in_flow_s"]["median"] - native["in_flow_s"]["median"]) * 1_000 / row["nodes"]
        )
        rows.append(row)
    return rows
