"""Part (a): how long a submission takes, and how many a second the system sustains.

Each *submitter* performs one submission of the small DAG per call:

- ``figway_http``: ``POST /workflow_runs/`` to ``figway serve`` (keep-alive httpx client);
- ``figway_inprocess``: figway's ``Dispatcher.start_run`` called in this process, on the
  same database and Redis (no HTTP), to split the HTTP layer from the rest;
- ``baseline``: what the legacy system did: one ``INSERT`` into a plain table
  (psycopg, autocommit) plus the DAG enqueued with plain RQ in one ``enqueue_many``
  (the same RQ call figway's executor makes);
- ``baseline_per_job``: the same with one ``enqueue`` call per node;
- ``http_floor``: ``GET /healthz``, the cost of an HTTP round trip to the gateway.

Sequential latencies are taken round-robin over the submitters (one submission
of each in turn), so they share the machine's noise. No worker runs during this
part: the jobs wait in Redis and are flushed afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import psycopg
from redis import Redis

from backends.contract import Executor
from bench.native import enqueue_dag, queue
from bench.stats import Summary, summarise
from bench.timing import PhaseTimer, StatementCounter
from bench.workflows import FOLDER_ID, WORKSPACE_ID, BenchDag
from gateway.config import Settings
from gateway.dispatch.dispatcher import Dispatcher, RunRequest
from gateway.routing.router import Router
from gateway.routing.source import builtin_rules

__all__ = [
    "LEGACY_INSERT",
    "Baseline",
    "FigwayHttp",
    "FigwayInProcess",
    "HttpFloor",
    "LatencyResult",
    "SubmitTarget",
    "Submitter",
    "SubmitterFactory",
    "SustainedResult",
    "measure_latency",
    "measure_sustained",
    "submitter_factories",
    "wait_for_run",
]

LEGACY_INSERT = """
INSERT INTO legacy_runs (job_run_id, workflow_id, workspace_id, folder_id, job_id, status)
VALUES (%s, %s, %s, %s, %s, 'queued')
"""


class Submitter(Protocol):
    def submit(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SubmitTarget:
    """Where submissions go: the gateway, its database and Redis, and the DAG."""

    api_url: str
    database_url: str
    redis_url: str
    dag: BenchDag


def run_body(dag: BenchDag) -> dict[str, Any]:
    """The body of ``POST /workflow_runs/`` for one submission of ``dag``."""
    return {
        "workspace_id": WORKSPACE_ID,
        "folder_id": FOLDER_ID,
        "job_id": "bench-submit",
        "workflow_id": dag.workflow_id,
    }


#: The statuses after which a figway run changes no more.
RUN_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def wait_for_run(
    client: httpx.Client,
    run_id: str,
    *,
    timeout: float,
    poll_seconds: float,
    detail: Callable[[], object] = lambda: "",
) -> dict[str, Any]:
    """``GET /workflow_runs/{run_id}`` every ``poll_seconds`` until the run is terminal.

    Raises TimeoutError after ``timeout`` seconds, with what ``detail`` returns (logs).
    """
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(poll_seconds)
        response = client.get(f"/workflow_runs/{run_id}")
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        if run["status"] in RUN_TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"figway run {run_id} still {run['status']}: {detail()}")


class FigwayHttp:
    def __init__(self, target: SubmitTarget) -> None:
        self._client = httpx.Client(base_url=target.api_url, timeout=30.0)
        self._body = run_body(target.dag)

    def submit(self) -> None:
        response = self._client.post("/workflow_runs/", json=self._body)
        if response.status_code != 201:
            raise RuntimeError(
                f"POST /workflow_runs/ answered {response.status_code}: {response.text}"
            )

    def close(self) -> None:
        self._client.close()


class FigwayInProcess:
    """figway's dispatcher, wired as `figway serve` wires it, called without HTTP.

    Its store and executor are seen through a :class:`PhaseTimer`, so the time
    of a submission splits into database transactions, the backend's submit
    (the RQ enqueue by default), and the rest (loading and validating the
    definition, building the plan). ``executor`` replaces the RQ executor, for
    workflows routed to another backend.
    """

    def __init__(self, target: SubmitTarget, executor: Executor | None = None) -> None:
        # Imported here: only this submitter needs figway's backends in the bench process.
        from backends.nodes import default_registry
        from backends.rq.executor import RQExecutor
        from backends.store import Store, create_database_engine

        settings = Settings(database_url=target.database_url, redis_url=target.redis_url)
        self._engine = create_database_engine(target.database_url)
        self._redis = Redis.from_url(target.redis_url)
        self.timer = PhaseTimer()
        self.counter = StatementCounter(self._engine)
        if executor is None:
            executor = RQExecutor(self._redis, job_timeout_seconds=settings.job_timeout_seconds)
        self._dispatcher = Dispatcher(
            store=self.timer.wrap(Store(self._engine), "store"),
            executors={executor.name: self.timer.wrap(executor, executor.name)},
            node_types=default_registry(),
            settings=settings,
            router=Router(builtin_rules(executor.name)),
        )
        self._request = RunRequest(**run_body(target.dag))
        self._submissions = 0
        self._total_seconds = 0.0

    def submit(self) -> None:
        began = time.perf_counter()
        _, created = self._dispatcher.start_run(self._request)
        self._total_seconds += time.perf_counter() - began
        self._submissions += 1
        if not created:
            raise RuntimeError("the dispatcher did not create a new run")

    def reset(self) -> None:
        """Forget the warm-up."""
        self.timer.reset()
        self.counter.reset()
        self._submissions = 0
        self._total_seconds = 0.0

    def breakdown(self) -> dict[str, float]:
        """Mean milliseconds per submission in each store/RQ call, and in everything else."""
        phases = self.timer.per_unit_ms(self._submissions)
        total = self._total_seconds * 1_000 / self._submissions
        return {**phases, "other (definition, plan, dispatcher)": total - sum(phases.values())}

    def database_work(self) -> dict[str, float]:
        """SQL statements and commits per submission."""
        return self.counter.per_unit(self._submissions)

    def close(self) -> None:
        self._engine.dispose()
        self._redis.close()


class Baseline:
    """One INSERT into a plain table plus the DAG enqueued with plain RQ."""

    def __init__(self, target: SubmitTarget, *, per_job: bool = False) -> None:
        self._dag = target.dag
        self._per_job = per_job
        self._redis = Redis.from_url(target.redis_url)
        self._queue = queue(self._redis)
        self._connection = psycopg.connect(target.database_url, autocommit=True)

    def submit(self) -> None:
        run_id = uuid.uuid4().hex
        self._connection.execute(
            LEGACY_INSERT,
            (run_id, self._dag.workflow_id, WORKSPACE_ID, FOLDER_ID, "bench-submit"),
        )
        enqueue_dag(self._queue, self._dag, run_id, per_job=self._per_job)

    def close(self) -> None:
        self._connection.close()
        self._redis.close()


class HttpFloor:
    def __init__(self, target: SubmitTarget) -> None:
        self._client = httpx.Client(base_url=target.api_url, timeout=30.0)

    def submit(self) -> None:
        self._client.get("/healthz").raise_for_status()

    def close(self) -> None:
        self._client.close()


SubmitterFactory = Callable[[SubmitTarget], Submitter]


def submitter_factories() -> dict[str, tuple[str, SubmitterFactory]]:
    """Submitter name -> (what it does, how to make one)."""
    return {
        "figway_http": ("figway: POST /workflow_runs/", FigwayHttp),
        "figway_inprocess": ("figway: Dispatcher.start_run, in-process (no HTTP)", FigwayInProcess),
        "baseline": ("baseline: 1 INSERT + RQ enqueue_many", Baseline),
        "baseline_per_job": (
            "baseline: 1 INSERT + one RQ enqueue per node",
            lambda target: Baseline(target, per_job=True),
        ),
        "http_floor": ("HTTP floor: GET /healthz", HttpFloor),
    }


@dataclass(frozen=True)
class LatencyResult:
    name: str
    label: str
    summary: Summary  # milliseconds
    samples_ms: list[float]
    breakdown_ms: dict[str, float] | None = None  # per submission, where the submitter splits it
    database_work: dict[str, float] | None = None  # SQL statements and commits per submission


def measure_latency(
    target: SubmitTarget,
    names: Sequence[str],
    *,
    requests: int,
    warmup: int,
    progress: Callable[[str], None],
    factories: Mapping[str, tuple[str, SubmitterFactory]] | None = None,
) -> list[LatencyResult]:
    """Sequential submissions, one of each submitter in turn; ``warmup`` rounds not kept.

    ``factories`` (name -> (label, factory)) defaults to :func:`submitter_factories`.
    """
    factories = submitter_factories() if factories is None else factories
    submitters = {name: factories[name][1](target) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    try:
        total = warmup + requests
        for round_index in range(total):
            for name, submitter in submitters.items():
                started = time.perf_counter()
                submitter.submit()
                elapsed_ms = (time.perf_counter() - started) * 1_000
                if round_index >= warmup:
                    samples[name].append(elapsed_ms)
            if round_index + 1 == warmup:
                for submitter in submitters.values():
                    reset = getattr(submitter, "reset", None)
                    if reset is not None:
                        reset()
            done = round_index + 1
            if done % 50 == 0 or done == total:
                progress(f"  round {done}/{total} (first {warmup} are warm-up)")
        breakdowns = {
            name: breakdown()
            for name, submitter in submitters.items()
            if (breakdown := getattr(submitter, "breakdown", None)) is not None
        }
        database_work = {
            name: work()
            for name, submitter in submitters.items()
            if (work := getattr(submitter, "database_work", None)) is not None
        }
    finally:
        for submitter in submitters.values():
            submitter.close()
    return [
        LatencyResult(
            name,
            factories[name][0],
            summarise(samples[name]),
            samples[name],
            breakdowns.get(name),
            database_work.get(name),
        )
        for name in names
    ]


@dataclass(frozen=True)
class SustainedResult:
    name: str
    label: str
    clients: int
    seconds: float
    submissions: int
    per_second: float
    latency: Summary  # milliseconds, under this load


def measure_sustained(
    target: SubmitTarget,
    name: str,
    *,
    clients: int,
    seconds: float,
    max_submissions: int,
    factories: Mapping[str, tuple[str, SubmitterFactory]] | None = None,
) -> SustainedResult:
    """``clients`` threads, each with its own connection, submit back to back.

    Stops after ``seconds`` or ``max_submissions``, whichever comes first.
    ``factories`` defaults to :func:`submitter_factories`.
    """
    label, factory = (submitter_factories() if factories is None else factories)[name]
    submitters = [factory(target) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    budget = threading.Semaphore(max_submissions)
    start_line = threading.Barrier(clients + 1)
    deadline = 0.0

    def client(index: int) -> None:
        start_line.wait()
        try:
            while time.perf_counter() < deadline and budget.acquire(blocking=False):
                started = time.perf_counter()
                submitters[index].submit()
                latencies[index].append((time.perf_counter() - started) * 1_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(clients)
    ]
    try:
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        deadline = began + seconds
        start_line.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    finally:
        for submitter in submitters:
            submitter.close()
    if errors:
        raise RuntimeError(f"{name}: a client failed") from errors[0]
    merged = [value for per_client in latencies for value in per_client]
    return SustainedResult(
        name=name,
        label=label,
        clients=clients,
        seconds=elapsed,
        submissions=len(merged),
        per_second=len(merged) / elapsed,
        latency=summarise(merged),
    )
