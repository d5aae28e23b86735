"""The comparison report: figures against hand-computed ones, the judge's answers, the
window and workflow filters, ``figway compare`` and ``GET /routing/compare``.

Runs are written as the gateway writes them (``Store.create_run``), then given
chosen outcomes, times and node attempts with SQL, so the report reads the same
rows it reads in production. Store, command and endpoint tests run on SQLite and
on PostgreSQL; the judgement tests use fixed records and no database.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update

from backends.model.status import RUN_TERMINAL, RunStatus
from backends.model.workflow import RunPlan, parse_definition
from backends.nodes import default_registry
from backends.store import Store, utcnow
from backends.store.comparison_records import FinishedRunRecord, Reports
from backends.store.models import NodeRun, Run, ShadowComparison
from backends.store.routing_records import RoutingRecords, ShadowCount, ShadowPair
from gateway.cli.main import main
from gateway.reports.comparison import (
    ComparisonReport,
    Thresholds,
    build_report,
    comparison_report,
    parse_since,
)
from tests.support.gateway import client_of, running_gateway

# -- the fixed records -----------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One run to record: its outcome, its queue wait and duration (seconds), node attempts.

    ``wait`` None: never started (submitted 5 s before it ended). A run not finished
    started ``ago`` and has no duration. A negative ``wait`` records a node started
    before the submission was recorded.
    """

    backend: str
    status: RunStatus
    wait: float | None
    duration: float | None
    attempts: tuple[int, int] = (1, 1)
    ago: timedelta = timedelta(hours=1)
    workflow_id: str = "etl"
    shadow_of: str | None = None


S, F, C = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED

# Workflow etl, nodes a and b. The comments give what each run adds to the figures.
ETL_RQ = [
    Spec("rq", S, 1, 10),  # wait 1, duration 10, retries 0
    Spec("rq", S, 2, 20, (2, 1)),  # retries 1
    Spec("rq", F, 3, 30, (3, 0)),  # retries 2 (b was skipped: attempts 0)
    Spec("rq", S, 4, 40),
    Spec("rq", C, 5, 50, (4, 4)),  # cancelled: counted, judged in nothing
    Spec("rq", F, None, None, (0, 0)),  # failed before any node ran: no wait, no duration
]
ETL_PREFECT = [
    Spec("prefect", S, 0.5, 15),
    Spec("prefect", S, -2, 5, (1, 2)),  # started before the submission was recorded: wait 0
    Spec("prefect", F, 1.5, 25),
]
#: Finished 8 days ago: outside the default 7-day window.
ETL_OLD = Spec("rq", F, 1, 1000, (5, 5), ago=timedelta(days=8))
OTHER = [
    Spec("rq", S, 1, 2, workflow_id="other"),
    Spec("rq", S, 1, 4, workflow_id="other"),
]

#: What the report must say about them, computed by hand (nearest rank: the
#: ceil(share x n)-th smallest value).
ETL_RQ_FIGURES = {
    "backend": "rq",
    "runs": 5,  # 3 succeeded + 2 failed
    "succeeded": 3,
    "failed": 2,
    "cancelled": 1,
    "failure_rate": 0.4,
    # waits [1, 2, 3, 4]: p50 is the 2nd, p95 and p99 the 4th
    "queue_wait_seconds": {"count": 4, "p50": 2.0, "p95": 4.0, "p99": 4.0},
    # succeeded runs only: executions [10, 20, 40], totals (wait + execution) [11, 22, 44]
    "execution_time_seconds": {"count": 3, "p50": 20.0, "p95": 40.0, "p99": 40.0},
    "total_time_seconds": {"count": 3, "p50": 22.0, "p95": 44.0, "p99": 44.0},
    "retries": 3,  # 0 + 1 + 2 + 0 + 0
    "retries_per_run": 0.6,
    "shadow": {"compared": 2, "mismatched": 2, "mismatch_rate": 1.0},
}
ETL_PREFECT_FIGURES = {
    "backend": "prefect",
    "runs": 3,
    "succeeded": 2,
    "failed": 1,
    "cancelled": 0,
    "failure_rate": 0.333333,
    # waits [0, 0.5, 1.5]: p50 is the 2nd (ceil 1.5), p95 the 3rd (ceil 2.85)
    "queue_wait_seconds": {"count": 3, "p50": 0.5, "p95": 1.5, "p99": 1.5},
    # succeeded: executions [15, 5]; totals [15.5, 3] (accepted 3 s before it finished)
    "execution_time_seconds": {"count": 2, "p50": 5.0, "p95": 15.0, "p99": 15.0},
    "total_time_seconds": {"count": 2, "p50": 3.0, "p95": 15.5, "p99": 15.5},
    "retries": 1,
    "retries_per_run": 0.333333,
    "shadow": {"compared": 4, "mismatched": 1, "mismatch_rate": 0.25},
}
NO_RUNS = {
    "runs": 0,
    "succeeded": 0,
    "failed": 0,
    "cancelled": 0,
    "failure_rate": None,
    "queue_wait_seconds": {"count": 0, "p50": None, "p95": None, "p99": None},
    "execution_time_seconds": {"count": 0, "p50": None, "p95": None, "p99": None},
    "total_time_seconds": {"count": 0, "p50": None, "p95": None, "p99": None},
    "retries": 0,
    "retries_per_run": None,
    "shadow": {"compared": 0, "mismatched": 0, "mismatch_rate": None},
}
OTHER_RQ_FIGURES = {
    **NO_RUNS,
    "backend": "rq",
    "runs": 2,
    "succeeded": 2,
    "failure_rate": 0.0,
    "queue_wait_seconds": {"count": 2, "p50": 1.0, "p95": 1.0, "p99": 1.0},
    "execution_time_seconds": {"count": 2, "p50": 2.0, "p95": 4.0, "p99": 4.0},
    "total_time_seconds": {"count": 2, "p50": 3.0, "p95": 5.0, "p99": 5.0},
    "retries_per_run": 0.0,
}


def record(store: Store, spec: Spec, now: datetime) -> str:
    """Record one run as the gateway would, then give it the spec's outcome and times."""
    definition = parse_definition(
        {
            "workflow_id": spec.workflow_id,
            "workspace_id": "ws",
            "folder_id": "f",
            "nodes": {"a": {"type": "noop"}, "b": {"type": "noop"}},
            "dependencies": {"b": ["a"]},
        },
        node_types=default_registry(),
    )
    job_run_id = f"cmp-{uuid.uuid4().hex[:12]}"
    if spec.shadow_of is not None:
        job_run_id = f"{spec.shadow_of}~shadow"
    plan = RunPlan.from_definition(definition, job_run_id=job_run_id, job_id="job")
    assert store.create_run(
        plan=plan, backend=spec.backend, from_job=None, shadow_of=spec.shadow_of
    )
    end = now - spec.ago
    finished = end if spec.status in RUN_TERMINAL else None
    started: datetime | None = end - timedelta(seconds=spec.duration or 0)
    submitted = end - timedelta(seconds=5)
    if spec.wait is None:
        started = None
    else:
        submitted = end - timedelta(seconds=(spec.duration or 0) + spec.wait)
    with store.engine.begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.job_run_id == job_run_id)
            .values(
                status=spec.status,
                submitted_at=submitted,
                started_at=started,
                finished_at=finished,
            )
        )
        for node_id, attempts in zip(("a", "b"), spec.attempts, strict=True):
            connection.execute(
                update(NodeRun)
                .where(NodeRun.job_run_id == job_run_id, NodeRun.node_id == node_id)
                .values(attempts=attempts)
            )
    return job_run_id


def compared(
    store: Store,
    job_run_id: str,
    *,
    shadow_backend: str,
    matched: bool,
    at: datetime,
    workflow_id: str = "etl",
) -> None:
    """A shadow comparison of ``job_run_id`` (any client run: the row only needs one)."""
    records = RoutingRecords(store.engine)
    primary = "prefect" if shadow_backend == "rq" else "rq"
    assert records.record_comparison(
        pair=ShadowPair(job_run_id, f"{job_run_id}~shadow"),
        workflow_id=workflow_id,
        primary_backend=primary,
        shadow_backend=shadow_backend,
        mismatches=[] if matched else [{"node_id": "a", "field": "output"}],
    )
    with store.engine.begin() as connection:
        connection.execute(
            update(ShadowComparison)
            .where(ShadowComparison.job_run_id == job_run_id)
            .values(compared_at=at)
        )


def record_all(store: Store, *, unfinished: bool = True) -> dict[str, list[str]]:
    """Every fixed record above, with shadow runs and comparisons; the client run ids."""
    now = utcnow()
    ids = {
        "rq": [record(store, spec, now) for spec in ETL_RQ],
        "prefect": [record(store, spec, now) for spec in ETL_PREFECT],
        "old": [record(store, ETL_OLD, now)],
        "other": [record(store, spec, now) for spec in OTHER],
    }
    # Shadow runs never count, whatever they did.
    record(store, Spec("rq", F, 1, 1000, (5, 5), shadow_of=ids["prefect"][0]), now)
    record(store, Spec("prefect", F, 1, 999, (3, 3), shadow_of=ids["rq"][0]), now)
    if unfinished:  # not finished: not counted
        record(store, Spec("prefect", RunStatus.RUNNING, 1, None, (1, 0)), now)
    # Shadows on prefect: 1 of 4 mismatched in the window, and an older mismatch outside it.
    hour_ago = now - timedelta(hours=1)
    clients = ids["rq"] + ids["other"]
    for job_run_id, matched in zip(clients[:4], (True, False, True, True), strict=True):
        compared(store, job_run_id, shadow_backend="prefect", matched=matched, at=hour_ago)
    compared(
        store,
        clients[4],
        shadow_backend="prefect",
        matched=False,
        at=now - timedelta(days=8),
    )
    # Shadows on rq (the client ran on prefect): 2 of 2 mismatched.
    for job_run_id in ids["prefect"][:2]:
        compared(store, job_run_id, shadow_backend="rq", matched=False, at=hour_ago)
    return ids


def by_workflow(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["workflow_id"]: w for w in report["workflows"]}


def rows(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["backend"]: row for row in workflow["backends"]}


def report_of(
    store: Store, *, since: timedelta = timedelta(days=7), **options: Any
) -> dict[str, Any]:
    workflows = options.pop("workflows", ())
    now = utcnow()
    report = comparison_report(
        Reports(store.engine),
        RoutingRecords(store.engine),
        since=now - since,
        now=now,
        thresholds=Thresholds(**options),
        workflows=workflows,
    )
    return report.model_dump(mode="json")


# -- the figures, on SQLite and PostgreSQL ----------------------------------------------


def test_the_figures_match_the_hand_computed_ones(store: Store) -> None:
    record_all(store)

    report = report_of(store)

    workflows = by_workflow(report)
    assert list(workflows) == ["etl", "other"]
    etl = workflows["etl"]
    assert [row["backend"] for row in etl["backends"]] == ["rq", "prefect"]
    assert rows(etl) == {"rq": ETL_RQ_FIGURES, "prefect": ETL_PREFECT_FIGURES}
    assert rows(workflows["other"]) == {
        "rq": OTHER_RQ_FIGURES,
        "prefect": {**NO_RUNS, "backend": "prefect"},
    }
    assert report["thresholds"] == {
        "min_runs": 20,
        "failure_margin_points": 5.0,
        "max_ratio": 1.2,
        "confidence": 0.95,
        "watch": ["failure_rate", "execution_time"],
    }
    assert report["workflow_filter"] == []


def test_the_judgements_on_the_fixed_records(store: Store) -> None:
    record_all(store)

    default = by_workflow(report_of(store))
    judged = default["etl"]["judgement"]
    assert judged["answer"] == "inconclusive"
    assert (judged["candidate"], judged["baseline"]) == ("prefect", "rq")
    assert (judged["candidate_runs"], judged["baseline_runs"]) == (3, 5)
    assert judged["watched"] == ["failure_rate", "execution_time"]
    assert list(judged["figures"]) == ["failure_rate", "queue_wait", "execution_time", "total_time"]
    failure = judged["figures"]["failure_rate"]
    assert (failure["candidate_value"], failure["baseline_value"]) == (33.333333, 40.0)
    assert judged["sentence"].startswith(
        "Too early to say whether prefect is worse than rq on failure rate"
    )
    assert "(at least 20 a side needed)" in judged["sentence"]
    assert judged["shadow"] == "1 of 4 shadow comparison(s) on prefect differed"
    # other never ran on prefect: nothing to judge.
    assert default["other"]["judgement"]["answer"] == "inconclusive"
    assert default["other"]["judgement"]["figures"]["failure_rate"]["pairs"] == 0


def test_the_window_counts_runs_by_when_they_finished(store: Store) -> None:
    record_all(store)

    ten_days = rows(by_workflow(report_of(store, since=timedelta(days=10)))["etl"])

    # The old failed run (wait 1, duration 1000, retries 8) and the old mismatch join in.
    rq = ten_days["rq"]
    assert (rq["runs"], rq["failed"], rq["failure_rate"]) == (6, 3, 0.5)
    # A failed run's time is not an execution time: only the queue wait sees it.
    assert rq["execution_time_seconds"] == ETL_RQ_FIGURES["execution_time_seconds"]
    assert rq["queue_wait_seconds"] == {"count": 5, "p50": 2.0, "p95": 4.0, "p99": 4.0}
    assert (rq["retries"], rq["retries_per_run"]) == (11, 1.833333)
    assert ten_days["prefect"]["shadow"] == {"compared": 5, "mismatched": 2, "mismatch_rate": 0.4}

    # Half an hour back: nothing here finished that recently.
    assert report_of(store, since=timedelta(minutes=30))["workflows"] == []


def test_the_workflow_filter(store: Store) -> None:
    record_all(store)

    only_other = report_of(store, workflows=["other"])
    assert [w["workflow_id"] for w in only_other["workflows"]] == ["other"]
    assert only_other["workflow_filter"] == ["other"]
    assert rows(only_other["workflows"][0])["rq"] == OTHER_RQ_FIGURES

    # A workflow asked for is reported even with nothing to show.
    asked = by_workflow(report_of(store, workflows=["etl", "nothing-ran"]))
    assert list(asked) == ["etl", "nothing-ran"]
    assert rows(asked["etl"]) == {"rq": ETL_RQ_FIGURES, "prefect": ETL_PREFECT_FIGURES}
    assert rows(asked["nothing-ran"])["prefect"] == {**NO_RUNS, "backend": "prefect"}


def test_the_store_reads_only_finished_client_runs(store: Store) -> None:
    ids = record_all(store)

    since = utcnow() - timedelta(days=7)
    runs = list(Reports(store.engine).finished_runs(since=since, workflows=["etl"]))

    assert len(runs) == len(ETL_RQ) + len(ETL_PREFECT)
    retries = sorted(run.retries for run in runs)
    assert retries == sorted([0, 1, 2, 0, 6, 0, 0, 1, 0])  # the cancelled run: 3 + 3
    shadows = RoutingRecords(store.engine).shadow_counts(since=since)
    assert sorted(shadows, key=lambda s: s.backend) == [
        ShadowCount("etl", "prefect", 4, 1),
        ShadowCount("etl", "rq", 2, 2),
    ]
    assert len(ids["rq"]) == len(ETL_RQ)


# -- the judge on fixed records (no database) -------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def finished(
    backend: str, count: int, *, failed: int = 0, duration: float = 10.0
) -> list[FinishedRunRecord]:
    """``count`` judged runs of workflow wf on ``backend``, the first ``failed`` failed."""
    started = T0 + timedelta(seconds=1)
    return [
        FinishedRunRecord(
            workflow_id="wf",
            backend=backend,
            status=RunStatus.FAILED if index < failed else RunStatus.SUCCEEDED,
            submitted_at=T0,
            started_at=started,
            finished_at=started + timedelta(seconds=duration * (1 + 0.05 * math.sin(index))),
            retries=0,
        )
        for index in range(count)
    ]


def judgement_of(
    runs: Sequence[FinishedRunRecord],
    shadows: Sequence[ShadowCount] = (),
    **thresholds: Any,
) -> dict[str, Any]:
    report: ComparisonReport = build_report(
        runs,
        shadows,
        since=T0,
        until=T0 + timedelta(days=1),
        thresholds=Thresholds(**thresholds),
    )
    (workflow,) = report.workflows
    return workflow.judgement.model_dump(mode="json")


def test_no_answer_below_min_runs_on_either_backend() -> None:
    rq = finished("rq", 20)
    assert judgement_of(rq + finished("prefect", 19, failed=19))["answer"] == "inconclusive"
    assert judgement_of(rq + finished("prefect", 20, failed=20))["answer"] == "worse"
    # Cancelled runs are not judged, so they do not make up the numbers.
    cancelled = [
        FinishedRunRecord("wf", "prefect", RunStatus.CANCELLED, T0, None, T0, 0) for _ in range(5)
    ]
    assert judgement_of(rq + finished("prefect", 19, failed=19) + cancelled)["answer"] == (
        "inconclusive"
    )


def test_not_worse_needs_evidence_and_says_so_with_bounds() -> None:
    few = judgement_of(finished("rq", 30) + finished("prefect", 30))
    assert few["answer"] == "inconclusive", "30 clean runs cannot rule out 5 points more failures"
    assert few["more_runs"] > 0
    assert few["expected_seconds"] is not None  # at the window's rate of 30 runs a day

    enough = judgement_of(finished("rq", 120) + finished("prefect", 120))
    assert enough["answer"] == "not_worse"
    failure = enough["figures"]["failure_rate"]
    assert failure["upper"] < failure["threshold"] == 5.0
    assert enough["more_runs"] == 0
    assert enough["sentence"].startswith("prefect is not worse than rq on failure rate (")


def test_the_margins_and_watched_figures_decide() -> None:
    runs = finished("rq", 60, duration=10) + finished("prefect", 60, duration=15)
    assert judgement_of(runs)["answer"] == "worse"  # x1.5 against a x1.2 margin
    assert judgement_of(runs, max_ratio=2)["answer"] != "worse"
    only_failures = judgement_of(runs, watch=["failure_rate"])
    assert only_failures["answer"] != "worse"
    # Every figure is still shown, watched or not.
    execution = only_failures["figures"]["execution_time"]
    assert (execution["watched"], execution["answer"]) == (False, "worse")
    assert round(execution["estimate"], 1) == 1.5


def test_shadow_mismatches_are_named_but_do_not_decide() -> None:
    runs = finished("rq", 120) + finished("prefect", 120)
    judged = judgement_of(runs, [ShadowCount("wf", "prefect", 10, 3)])
    assert judged["answer"] == "not_worse"
    assert judged["shadow"] == "3 of 10 shadow comparison(s) on prefect differed"


def test_percentiles_are_nearest_rank() -> None:
    runs = [
        FinishedRunRecord(
            "wf",
            "rq",
            RunStatus.SUCCEEDED,
            T0,
            T0 + timedelta(seconds=101 - seconds),  # waits 100 .. 1
            T0 + timedelta(seconds=101 - seconds + seconds),  # durations 1 .. 100
            0,
        )
        for seconds in range(1, 101)
    ]
    report = build_report(runs, [], since=T0, until=T0, thresholds=Thresholds())
    rq = report.workflows[0].backends[0]
    expected = {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert rq.execution_time_seconds.model_dump() == expected
    assert rq.queue_wait_seconds.model_dump() == expected


def test_a_node_started_before_the_submission_was_recorded_waited_zero() -> None:
    early = [
        FinishedRunRecord(
            "wf", "prefect", RunStatus.SUCCEEDED, T0, T0 - timedelta(seconds=2), T0, 0
        )
        for _ in range(2)
    ]
    report = build_report(
        early + finished("prefect", 1), [], since=T0, until=T0, thresholds=Thresholds()
    )
    waits = report.workflows[0].backends[1].queue_wait_seconds
    assert waits.model_dump() == {"count": 3, "p50": 0.0, "p95": 1.0, "p99": 1.0}


def test_a_shadow_only_backend_gets_a_row() -> None:
    report = build_report(
        finished("rq", 3),
        [ShadowCount("wf", "prefect", 8, 2)],
        since=T0,
        until=T0,
        thresholds=Thresholds(),
    )
    prefect = report.workflows[0].backends[1]
    assert (prefect.backend, prefect.runs) == ("prefect", 0)
    assert prefect.shadow.model_dump() == {"compared": 8, "mismatched": 2, "mismatch_rate": 0.25}


# -- --since ------------------------------------------------------------------------------

NOW = datetime(2024, 5, 8, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1d12h", NOW - timedelta(days=1, hours=12)),
        (" 7D ", NOW - timedelta(days=7)),
        ("2024-05-01T00:00:00Z", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T02:00:00+02:00", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T06:30", datetime(2024, 5, 1, 6, 30, tzinfo=UTC)),  # no zone: UTC
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_since_accepts_a_duration_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "neither a duration"),
        ("7 days", "neither a duration"),
        ("-7d", "neither a duration"),
        ("", "neither a duration"),
        ("0h", "empty window"),
        ("2024-06-01", "in the future"),
        ("99999999999w", "before the year 1"),
    ],
)
def test_since_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_since(text, now=NOW)


# -- figway compare ----------------------------------------------------------------------


def figway(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def cli_store(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, database_url: str, store: Store
) -> Store:
    """The test database, which ``figway`` uses too."""
    monkeypatch.setenv("FIGWAY_DATABASE_URL", database_url)
    return store


def test_compare_json(cli_store: Store) -> None:
    record_all(cli_store)

    result = figway("compare", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert rows(by_workflow(report)["etl"]) == {
        "rq": ETL_RQ_FIGURES,
        "prefect": ETL_PREFECT_FIGURES,
    }
    since, until = (datetime.fromisoformat(report[k]) for k in ("since", "until"))
    assert until - since == timedelta(days=7)
    assert abs(until - utcnow()) < timedelta(minutes=1)


def test_compare_options_reach_the_report(cli_store: Store) -> None:
    record_all(cli_store)

    result = figway(
        "compare",
        "--json",
        "--since",
        "10d",
        "--workflow",
        "etl",
        "--min-runs",
        "3",
        "--failure-margin",
        "2.5",
        "--max-ratio",
        "3",
        "--confidence",
        "0.9",
        "--watch",
        "queue_wait",
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["thresholds"] == {
        "min_runs": 3,
        "failure_margin_points": 2.5,
        "max_ratio": 3.0,
        "confidence": 0.9,
        "watch": ["queue_wait"],
    }
    assert report["workflow_filter"] == ["etl"]
    (etl,) = report["workflows"]
    assert rows(etl)["rq"]["runs"] == 6  # the 8-day-old run is in a 10-day window
    assert etl["judgement"]["watched"] == ["queue_wait"]
    assert etl["judgement"]["answer"] == "inconclusive"  # 3 runs decide nothing


def test_compare_table(cli_store: Store) -> None:
    record_all(cli_store)

    result = figway("compare", "--min-runs", "3")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("prefect against rq: client runs finished from ")
    assert lines[1] == (
        "judge: watching failure_rate, execution_time; margins 5 points and x1.2; 95% "
        "confidence; at least 3 judged run(s) a side"
    )
    header = next(line for line in lines if line.startswith("workflow / backend"))
    assert header.split("  ")[0] == "workflow / backend"
    start = lines.index("etl")
    assert lines[start + 1].split() == [
        *("rq", "5", "2", "40.0%", "1"),
        *("2.0s", "4.0s", "20.0s", "40.0s", "22.0s", "44.0s"),
        *("0.60", "2/2", "(100.0%)"),
    ]
    assert lines[start + 2].split() == [
        *("prefect", "3", "1", "33.3%", "0"),
        *("500ms", "1.5s", "5.0s", "15.0s", "3.0s", "15.5s"),
        *("0.33", "1/4", "(25.0%)"),
    ]
    assert lines[start + 3].startswith(
        "  judge: inconclusive - Too early to say whether prefect is worse than rq"
    )
    figures = [line.split()[:2] for line in lines[start + 4 : start + 8]]
    assert figures == [
        ["*", "inconclusive"],
        ["inconclusive", "queue"],
        ["*", "inconclusive"],
        ["inconclusive", "total"],
    ]
    assert (
        lines[start + 8]
        == "  shadows: 1 of 4 shadow comparison(s) on prefect differed (not judged)"
    )
    other = lines.index("other")
    assert lines[other + 2].split() == ["prefect", "0", "0", "-", "0", *["-"] * 8]
    assert lines[other + 3].startswith("  judge: inconclusive - Too early to say")
    # Every figure's row lines up under the header.
    assert len({len(line) for line in lines[start + 1 : start + 3]}) == 1


def test_compare_with_nothing_to_compare(cli_store: Store) -> None:
    result = figway("compare", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "no client run finished and no shadow was compared in this window" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "Invalid value for '--since': 'yesterday' is neither"),
        (("--since", "2999-01-01"), "is in the future"),
        (("--min-runs", "0"), "Invalid value for '--min-runs'"),
        (("--failure-margin", "101"), "Invalid value for '--failure-margin'"),
        (("--failure-margin", "0"), "Invalid value for '--failure-margin'"),
        (("--max-ratio", "1"), "Invalid value for '--max-ratio'"),
        (("--watch", "p95"), "Invalid value for '--watch'"),
    ],
)
def test_compare_refuses_bad_options_with_a_message(
    cli_store: Store, args: tuple[str, ...], message: str
) -> None:
    result = figway("compare", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_compare_reports_an_unreachable_database_as_a_message(
    monkeypatch: pytest.MonkeyPatch, cli_store: Store
) -> None:
    monkeypatch.setenv("FIGWAY_DATABASE_URL", "postgresql://figway@127.0.0.1:9/nowhere")
    result = figway("compare")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output


def test_compare_help_states_the_definitions(cli_env: None) -> None:
    result = figway("compare", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for phrase in (
        "Only client runs count",
        "failure rate: failed / (succeeded + failed)",
        "queue wait: accepted (the backend took the run) to its first node running",
        "execution time: first node running to finished, succeeded runs",
        "total time: accepted to finished, succeeded runs",
        "worse: beyond a margin",
        "not worse: a difference beyond the margins is ruled out",
        "nearest-rank",
        "max(attempts - 1, 0)",
        "on the shadow's backend",
        "[default: 7d]",
        "[default: 20;",
        "[default: 5.0;",
        "[default: 1.2;",
        "[default: 0.95;",
    ):
        assert phrase in text, phrase
    top = figway("--help")
    assert re.search(r"^\s+compare\s", top.stdout, re.MULTILINE), top.stdout


# -- GET /routing/compare -----------------------------------------------------------------


@pytest.fixture
def gateway_client(store: Store, database_url: str, tmp_path: Path) -> Iterator[Any]:
    """A gateway on the test database, holding the fixed records (all finished: an
    embedded gateway fails the active runs it finds when it starts)."""
    record_all(store, unfinished=False)
    with (
        running_gateway(tmp_path, database_url=database_url) as gateway,
        client_of(gateway) as http,
    ):
        yield http


def test_the_endpoint(gateway_client: Any) -> None:
    http = gateway_client
    response = http.get("/routing/compare", params={"min_runs": 3})
    assert response.status_code == 200, response.text
    report = response.json()
    workflows = by_workflow(report)
    assert rows(workflows["etl"]) == {"rq": ETL_RQ_FIGURES, "prefect": ETL_PREFECT_FIGURES}
    assert workflows["etl"]["judgement"]["answer"] == "inconclusive"
    assert report["thresholds"] == {
        "min_runs": 3,
        "failure_margin_points": 5.0,
        "max_ratio": 1.2,
        "confidence": 0.95,
        "watch": ["failure_rate", "execution_time"],
    }

    both = http.get("/routing/compare", params=[("workflow", "other"), ("workflow", "etl")])
    assert both.status_code == 200, both.text
    assert [w["workflow_id"] for w in both.json()["workflows"]] == ["etl", "other"]
    assert both.json()["workflow_filter"] == ["etl", "other"]

    strict = http.get(
        "/routing/compare",
        params=[
            ("workflow", "etl"),
            ("since", "10d"),
            ("min_runs", 3),
            ("max_ratio", 2),
            ("watch", "total_time"),
        ],
    ).json()
    (etl,) = strict["workflows"]
    assert rows(etl)["rq"]["runs"] == 6
    assert etl["judgement"]["watched"] == ["total_time"]
    assert strict["thresholds"]["max_ratio"] == 2

    empty = http.get("/routing/compare", params={"since": "2000-01-01T00:00:00Z", "workflow": "x"})
    assert empty.status_code == 200
    assert rows(empty.json()["workflows"][0])["rq"]["runs"] == 0


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"since": "yesterday"}, "since", "'yesterday' is neither a duration"),
        ({"since": "2999-01-01"}, "since", "is in the future"),
        ({"since": "0d"}, "since", "empty window"),
        ({"min_runs": 0}, "min_runs", "greater than or equal to 1"),
        ({"failure_margin": 0}, "failure_margin", "greater than or equal to 0.5"),
        ({"max_ratio": "fast"}, "max_ratio", "valid number"),
        # Finer than the judge resolves: planning it used to hold the request for seconds.
        ({"max_ratio": 1.0000000000000002}, "max_ratio", "greater than or equal to 1.01"),
        ({"watch": "p95"}, "watch.0", "'failure_rate', 'queue_wait', 'execution_time' or"),
        ({"workflow": "x" * 129}, "workflow.0", "at most 128 characters"),
    ],
)
def test_the_endpoint_refuses_bad_parameters_naming_them(
    gateway_client: Any, params: dict[str, Any], field: str, message: str
) -> None:
    response = gateway_client.get("/routing/compare", params=params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["field"] for e in body["errors"]] == [field]
    assert message in body["errors"][0]["message"]
    assert body["detail"].startswith(f"invalid request: {field}: ")
