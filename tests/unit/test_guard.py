"""Guards: when judge() rolls a rule back, and the nearest-rank percentile it uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.model.status import RunStatus
from backends.store.routing_records import FinishedRun
from gateway.routing.guard import GuardVerdict, judge, percentile
from gateway.routing.rules import Guard

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def finished(
    backend: str, count: int, *, failed: int = 0, seconds: float | Sequence[float] = 10.0
) -> list[FinishedRun]:
    """``count`` runs on ``backend``, the first ``failed`` of them failed, each taking ``seconds``."""
    durations = [float(seconds)] * count if isinstance(seconds, int | float) else list(seconds)
    assert len(durations) == count
    return [
        FinishedRun(
            workflow_id=f"wf-{n % 3}",
            backend=backend,
            status=RunStatus.FAILED if n < failed else RunStatus.SUCCEEDED,
            created_at=START + timedelta(minutes=n),
            finished_at=START + timedelta(minutes=n, seconds=duration),
        )
        for n, duration in enumerate(durations)
    ]


def guard(**fields: Any) -> Guard:
    values: dict[str, Any] = {"min_runs": 20, "rollback_to": "rq"}
    values.update(fields)
    return Guard(**values)


def verdict(rule_guard: Guard, runs: list[FinishedRun]) -> GuardVerdict:
    return judge(rule_guard, guarded_backend="prefect", runs=runs)


# -- failure rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_failed", "old_failed", "margin", "trips"),
    [
        pytest.param(6, 0, 0.25, True, id="30-against-0-beyond-25-points"),
        pytest.param(5, 0, 0.25, False, id="25-against-0-is-exactly-the-margin"),
        pytest.param(4, 0, 0.25, False, id="20-against-0-within-the-margin"),
        pytest.param(10, 4, 0.25, True, id="50-against-20-beyond-25-points"),
        pytest.param(8, 4, 0.25, False, id="40-against-20-within-the-margin"),
        pytest.param(1, 0, 0.0, True, id="zero-margin-trips-on-any-increase"),
        pytest.param(0, 10, 0.0, False, id="an-improvement-never-trips"),
        pytest.param(20, 20, 0.0, False, id="equally-bad-does-not-trip"),
    ],
)
def test_the_failure_rate_trips_beyond_its_margin(
    new_failed: int, old_failed: int, margin: float, trips: bool
) -> None:
    runs = finished("prefect", 20, failed=new_failed) + finished("rq", 20, failed=old_failed)
    result = verdict(guard(max_failure_rate_increase=margin), runs)
    assert result.trip is trips, result.reason
    assert (result.guarded.failed, result.baseline.failed) == (new_failed, old_failed)
    if trips:
        assert result.reason.startswith("failure rate ")
        assert f"{new_failed / 20:.1%} on prefect against {old_failed / 20:.1%} on rq" in (
            result.reason
        )
    else:
        assert result.reason == "prefect within the guard's limits"


# -- run time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_seconds", "ratio", "trips"),
    [
        pytest.param([25.0] * 20, 2, True, id="two-and-a-half-times-slower"),
        pytest.param([20.0] * 20, 2, False, id="exactly-the-ratio"),
        pytest.param([15.0] * 20, 2, False, id="within-the-ratio"),
        pytest.param([5.0] * 20, 1, False, id="faster-never-trips"),
        pytest.param([10.0] * 19 + [500.0], 2, False, id="one-slow-run-in-20-is-above-p95"),
        pytest.param([10.0] * 18 + [500.0] * 2, 2, True, id="two-slow-runs-in-20-reach-p95"),
    ],
)
def test_the_p95_run_time_trips_beyond_its_ratio(
    new_seconds: list[float], ratio: float, trips: bool
) -> None:
    runs = finished("prefect", 20, seconds=new_seconds) + finished("rq", 20, seconds=10.0)
    result = verdict(guard(max_p95_ratio=ratio), runs)
    assert result.trip is trips, result.reason
    assert result.baseline.p95_seconds == 10.0
    assert result.guarded.p95_seconds == sorted(new_seconds)[18], "p95 of 20 is the 19th"
    if trips:
        assert result.reason.startswith("p95 ")
        assert f"(allowed: {ratio:g}x)" in result.reason


def test_both_reasons_are_given_when_both_figures_are_worse() -> None:
    runs = finished("prefect", 20, failed=10, seconds=60.0) + finished("rq", 20, seconds=10.0)
    result = verdict(guard(max_failure_rate_increase=0.1, max_p95_ratio=2), runs)
    assert result.trip
    failure, slowness = result.reason.split("; ")
    assert failure.startswith("failure rate 50.0% on prefect against 0.0% on rq")
    assert slowness.startswith("p95 60.00s on prefect against 10.00s on rq")


@pytest.mark.parametrize(
    ("fields", "runs"),
    [
        pytest.param(
            {"max_p95_ratio": 2},
            finished("prefect", 20, failed=20) + finished("rq", 20),
            id="a-failure-rate-nobody-set-a-limit-on",
        ),
        pytest.param(
            {"max_failure_rate_increase": 0.05},
            finished("prefect", 20, seconds=1_000.0) + finished("rq", 20, seconds=1.0),
            id="a-run-time-nobody-set-a-limit-on",
        ),
    ],
)
def test_a_figure_without_a_threshold_never_trips(
    fields: dict[str, float], runs: list[FinishedRun]
) -> None:
    assert not verdict(guard(**fields), runs).trip


# -- not enough data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_count", "old_count"),
    [
        pytest.param(19, 500, id="too-few-on-the-guarded-backend"),
        pytest.param(500, 19, id="too-few-on-the-baseline"),
        pytest.param(19, 19, id="too-few-on-both"),
        pytest.param(0, 0, id="none-at-all"),
        pytest.param(500, 0, id="none-on-the-baseline"),
    ],
)
def test_a_guard_never_trips_below_min_runs_on_either_side(new_count: int, old_count: int) -> None:
    """Every guarded run failed and took an hour; the baseline ran clean in a second."""
    runs = finished("prefect", new_count, failed=new_count, seconds=3_600.0)
    runs += finished("rq", old_count, seconds=1.0)
    result = verdict(guard(max_failure_rate_increase=0.0, max_p95_ratio=1), runs)
    assert not result.trip
    assert result.reason == (
        f"not enough data: {new_count} finished run(s) on prefect and {old_count} on rq; "
        "the guard needs 20 on each"
    )


def test_the_same_terrible_figures_trip_at_exactly_min_runs() -> None:
    """The counterpart of the test above: at min_runs on each side the guard does judge."""
    runs = finished("prefect", 20, failed=20, seconds=3_600.0) + finished("rq", 20, seconds=1.0)
    assert verdict(guard(max_failure_rate_increase=0.0, max_p95_ratio=1), runs).trip


def test_runs_of_other_backends_are_not_counted() -> None:
    runs = finished("prefect", 19) + finished("rq", 20) + finished("airflow", 100, failed=100)
    result = verdict(guard(max_failure_rate_increase=0.0), runs)
    assert (result.guarded.runs, result.baseline.runs) == (19, 20)
    assert not result.trip


def test_the_baseline_is_the_backend_the_guard_rolls_back_to() -> None:
    runs = finished("rq", 20, failed=20) + finished("prefect", 20, failed=20)
    runs += finished("other", 20)
    rule_guard = guard(max_failure_rate_increase=0.0, rollback_to="other")
    result = judge(rule_guard, guarded_backend="rq", runs=runs)
    assert (result.guarded.backend, result.baseline.backend) == ("rq", "other")
    assert result.trip


def test_the_verdict_reports_its_figures_and_thresholds() -> None:
    runs = finished("prefect", 20, failed=5, seconds=[float(n) for n in range(1, 21)])
    runs += finished("rq", 40, failed=2, seconds=4.0)
    rule_guard = guard(min_runs=20, window_hours=6, max_failure_rate_increase=0.3)
    result = verdict(rule_guard, runs)
    assert not result.trip
    assert result.figures() == {
        "guarded": {
            "backend": "prefect",
            "runs": 20,
            "failed": 5,
            "failure_rate": 0.25,
            "p95_seconds": 19.0,
        },
        "baseline": {
            "backend": "rq",
            "runs": 40,
            "failed": 2,
            "failure_rate": 0.05,
            "p95_seconds": 4.0,
        },
        "thresholds": {
            "min_runs": 20,
            "window_hours": 6,
            "max_failure_rate_increase": 0.3,
            "max_p95_ratio": None,
        },
        "since": None,  # judge() alone has no window; the keeper sets it
    }


# -- percentile --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        pytest.param([5, 1, 4, 2, 3], 0.5, 3, id="median-of-unsorted"),
        pytest.param([7], 0.95, 7, id="single-value"),
        pytest.param(list(range(1, 101)), 0.95, 95, id="p95-of-100"),
        pytest.param(list(range(1, 21)), 0.95, 19, id="p95-of-20-is-the-19th"),
        pytest.param(list(range(1, 22)), 0.95, 20, id="p95-of-21-rounds-the-rank-up"),
        pytest.param(list(range(1, 11)), 0.5, 5, id="median-of-even-count-is-the-lower"),
        pytest.param([3, 1, 2], 1.0, 3, id="p100-is-the-maximum"),
        pytest.param([3, 1, 2], 0.0, 1, id="p0-is-the-minimum"),
        pytest.param([2.5, 2.5, 9.0, 2.5], 0.5, 2.5, id="repeated-values"),
        pytest.param(
            list(range(1, 101)),
            0.07,
            7,
            id="p7-of-100",  # 0.07 * 100 is 7.000000000000001 in floating point
        ),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], share: float, expected: float) -> None:
    assert percentile(values, share) == expected


@settings(database=None, max_examples=300)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
    share=st.sampled_from([0.5, 0.95]),
)
def test_percentile_meets_the_nearest_rank_definition(values: list[float], share: float) -> None:
    """The result is a value of the list, at least ``share`` of the values are at or below it,
    and fewer than ``share`` are below it. (0.5 and 0.95 are the shares figway uses.)"""
    result = percentile(values, share)
    rank = math.ceil(share * len(values))
    assert result in values
    assert sum(value <= result for value in values) >= rank
    assert sum(value < result for value in values) < rank
