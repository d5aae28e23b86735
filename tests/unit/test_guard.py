"""Guards and promotion blocks as the judge reads them: watched figures, margins, policy;
and the nearest-rank percentile the comparison report uses.

The judge itself is tested in ``test_judge.py``; guards on recorded runs in
``tests/store/test_guard_keeper.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.reports.comparison import percentile
from gateway.reports.evidence import policy_of
from gateway.reports.judge import JudgePolicy
from gateway.routing.guard import guard_policy
from gateway.routing.rules import Guard, Promote, Rule


def guard(**fields: Any) -> Guard:
    return Guard(**fields)


def test_a_guard_watches_the_failure_rate_and_execution_time_unless_it_says() -> None:
    assert guard().watched == ("failure_rate", "execution_time")
    assert guard(watch=["queue_wait"]).watched == ("queue_wait",)


def test_a_guard_written_for_the_old_judge_watches_what_the_old_one_did() -> None:
    """``max_p95_ratio`` is the older name of ``max_ratio``, on accepted to finished."""
    older = guard(max_failure_rate_increase=0.05, max_p95_ratio=1.5)
    assert older.watched == ("failure_rate", "total_time")
    assert guard(max_p95_ratio=1.5).watched == ("total_time",)
    assert guard_policy(older).max_time_ratio == 1.5
    with pytest.raises(ValueError, match="older name of max_ratio"):
        guard(max_p95_ratio=1.5, max_ratio=1.2)


def test_the_judges_policy_takes_the_guards_margins_and_defaults_the_rest() -> None:
    policy = guard_policy(guard(min_runs=40, max_ratio=1.3, confidence=0.99))
    defaults = JudgePolicy()
    assert policy == JudgePolicy(
        confidence=0.99,
        max_failure_increase=defaults.max_failure_increase,
        max_time_ratio=1.3,
        min_runs=40,
    )
    promote = Promote(max_failure_rate_increase=0.02)
    assert policy_of(promote, time_ratio=promote.max_ratio).max_failure_increase == 0.02
    assert policy_of(promote, time_ratio=None).min_runs == 50


def test_steps_without_promote_advance_on_the_guards_figures() -> None:
    rule = Rule(
        id="r",
        backend="prefect",
        steps=[5, 50],
        guard=Guard(min_runs=30, watch=["failure_rate"], max_p95_ratio=2),
    )
    assert rule.judged == Promote(watch=["failure_rate"], max_ratio=2, min_runs=30, confidence=0.95)
    assert Rule(id="r", backend="prefect", percent=5).judged is None


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
