"""The judge: its three answers, its bounds, its floor, its outlier clip, and its two forms."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from gateway.reports.judge import (
    ALL_FIGURES,
    FINEST_FAILURE_INCREASE,
    FINEST_TIME_RATIO,
    Answer,
    Figure,
    JudgePolicy,
    RunSample,
    SequentialJudge,
    expected_wait,
    judge,
    min_decidable_runs,
)

OK = RunSample(failed=False, queue_wait=2.0, execution_time=60.0, total_time=62.0)
FAILED = RunSample(failed=True, queue_wait=2.0, execution_time=5.0, total_time=7.0)


def runs(
    count: int,
    *,
    seed: int,
    failure: float = 0.0,
    slowdown: float = 1.0,
    sigma: float = 0.5,
) -> list[RunSample]:
    """``count`` runs drawn like bench/decisions draws them (lognormal times, Bernoulli failures)."""
    rng = random.Random(seed)
    drawn = []
    for _ in range(count):
        queue = 2.0 * slowdown * math.exp(sigma * rng.gauss(0.0, 1.0))
        execution = 60.0 * slowdown * math.exp(sigma * rng.gauss(0.0, 1.0))
        drawn.append(
            RunSample(
                failed=rng.random() < failure,
                queue_wait=queue,
                execution_time=execution,
                total_time=queue + execution,
            )
        )
    return drawn


def every(n: int, count: int) -> list[RunSample]:
    """``count`` runs of which every ``n``-th failed (none when n is 0)."""
    return [FAILED if n and i % n == n - 1 else OK for i in range(count)]


# -- the three answers --------------------------------------------------------------------


def test_a_candidate_failing_a_third_of_its_runs_is_worse() -> None:
    verdict = judge(every(3, 60), every(0, 60), watch=[Figure.FAILURE_RATE])

    figure = verdict.figure(Figure.FAILURE_RATE)
    assert verdict.answer is Answer.WORSE
    assert figure.answer is Answer.WORSE
    assert figure.estimate == pytest.approx(100 / 3)
    assert figure.lower is not None
    assert figure.upper is not None
    assert 5 < figure.lower < figure.estimate < figure.upper
    assert figure.threshold == 5
    assert (figure.candidate_runs, figure.baseline_runs, figure.pairs) == (60, 60, 60)
    assert figure.more_runs == 0


def test_two_clean_backends_are_not_worse_on_every_figure() -> None:
    verdict = judge([OK] * 120, [OK] * 120)

    assert verdict.answer is Answer.NOT_WORSE
    assert {f.figure for f in verdict.figures} == set(ALL_FIGURES)
    for figure in verdict.figures:
        assert figure.answer is Answer.NOT_WORSE, figure
        assert figure.upper is not None
        assert figure.upper < figure.threshold
    assert verdict.figure("execution_time").estimate == pytest.approx(1.0)


def test_identically_distributed_times_end_not_worse() -> None:
    times = [Figure.QUEUE_WAIT, Figure.EXECUTION_TIME, Figure.TOTAL_TIME]
    verdict = judge(runs(400, seed=1), runs(400, seed=2), watch=times)

    assert verdict.answer is Answer.NOT_WORSE
    execution = verdict.figure(Figure.EXECUTION_TIME)
    assert execution.lower is not None
    assert execution.upper is not None
    assert execution.lower < 1 < execution.upper < 1.2


def test_twice_as_slow_is_worse_on_the_times_within_50_runs() -> None:
    verdict = judge(runs(50, seed=3, slowdown=2.0), runs(50, seed=4), watch=["execution_time"])

    execution = verdict.figure(Figure.EXECUTION_TIME)
    assert verdict.answer is Answer.WORSE
    assert execution.lower is not None
    assert execution.lower > 1.2
    assert 1.6 < (execution.estimate or 0) < 2.5
    # Not watched, still judged and shown: the report puts every figure side by side.
    assert verdict.figure(Figure.TOTAL_TIME).answer is Answer.WORSE
    assert not verdict.figure(Figure.TOTAL_TIME).watched


def test_few_runs_are_inconclusive_with_an_estimate_of_the_runs_still_needed() -> None:
    verdict = judge(runs(30, seed=5, failure=0.05), runs(30, seed=6, failure=0.05))

    figure = verdict.figure(Figure.FAILURE_RATE)
    assert figure.answer is Answer.INCONCLUSIVE
    assert figure.lower is not None
    assert figure.upper is not None
    assert figure.lower < 5 < figure.upper
    assert verdict.answer is Answer.INCONCLUSIVE
    assert verdict.more_runs is not None
    assert 10 < verdict.more_runs < 2_000
    assert verdict.expected_wait(runs_per_hour=10.0) == timedelta(hours=verdict.more_runs / 10)


def test_the_runs_needed_estimate_comes_true_about_when_it_says() -> None:
    candidate, baseline = runs(600, seed=7), runs(600, seed=8)
    early = judge(candidate[:30], baseline[:30], watch=["execution_time"])
    assert early.answer is Answer.INCONCLUSIVE
    assert early.more_runs is not None

    live = SequentialJudge(watch=["execution_time"])
    decided_at = None
    for index, (new, old) in enumerate(zip(candidate, baseline, strict=True), start=1):
        live.add_pair(new, old)
        if live.answer() is not Answer.INCONCLUSIVE:
            decided_at = index
            break
    assert decided_at is not None
    # An estimate, not a promise: within a factor of three either way on this draw.
    assert (decided_at - 30) / 3 <= early.more_runs <= (decided_at - 30) * 3


def test_a_dead_heat_at_the_margin_sees_no_decision_coming() -> None:
    # Exactly +5 points on every pair in turn: the evidence never leans either way.
    candidate = [FAILED if i % 20 == 0 else OK for i in range(400)]
    verdict = judge(candidate, [OK] * 400, watch=[Figure.FAILURE_RATE])

    assert verdict.answer is Answer.INCONCLUSIVE
    assert verdict.more_runs is None
    assert "no decision is in sight" in verdict.sentence()
    assert verdict.expected_wait(runs_per_hour=100.0) is None


# -- the floor ----------------------------------------------------------------------------


def test_min_runs_is_a_floor_on_either_side() -> None:
    policy = JudgePolicy(min_runs=20)
    watch = [Figure.FAILURE_RATE]

    assert judge([FAILED] * 19, [OK] * 19, watch=watch, policy=policy).answer is (
        Answer.INCONCLUSIVE
    )
    assert judge([FAILED] * 19, [OK] * 19, watch=watch, policy=JudgePolicy(min_runs=1)).answer is (
        Answer.WORSE
    )
    assert judge([FAILED] * 20, [OK] * 19, watch=watch, policy=policy).answer is (
        Answer.INCONCLUSIVE
    )
    assert judge([FAILED] * 20, [OK] * 20, watch=watch, policy=policy).answer is Answer.WORSE


def test_below_the_floor_the_runs_needed_reach_at_least_the_floor() -> None:
    verdict = judge([OK] * 5, [OK] * 5, policy=JudgePolicy(min_runs=50))

    assert verdict.answer is Answer.INCONCLUSIVE
    assert verdict.more_runs is not None
    assert verdict.more_runs >= 45
    assert "at least 50 a side needed" in verdict.sentence()


def test_min_decidable_runs_is_where_clean_data_first_say_not_worse() -> None:
    policy = JudgePolicy(min_runs=1)
    needed = min_decidable_runs(policy, Figure.FAILURE_RATE)

    assert judge(
        [OK] * (needed - 1), [OK] * (needed - 1), watch=["failure_rate"], policy=policy
    ).answer is (Answer.INCONCLUSIVE)
    assert judge([OK] * needed, [OK] * needed, watch=["failure_rate"], policy=policy).answer is (
        Answer.NOT_WORSE
    )
    # A margin half as wide needs about twice the runs; a wider one fewer.
    assert min_decidable_runs(JudgePolicy(max_failure_increase=0.025)) > 1.8 * needed
    assert min_decidable_runs(JudgePolicy(max_failure_increase=0.10)) < needed
    assert min_decidable_runs(JudgePolicy(max_time_ratio=1.1), "execution_time") > (
        min_decidable_runs(JudgePolicy(max_time_ratio=1.5), "execution_time")
    )


# -- outliers -----------------------------------------------------------------------------


def test_a_handful_of_huge_outliers_does_not_trip_the_times() -> None:
    candidate, baseline = runs(300, seed=9), runs(300, seed=10)
    for index in (3, 11, 25, 140):  # four runs 1,000 times slower, three of them early
        run = candidate[index]
        assert run.execution_time is not None
        assert run.queue_wait is not None
        slow = run.execution_time * 1_000
        candidate[index] = RunSample(
            failed=False,
            queue_wait=run.queue_wait,
            execution_time=slow,
            total_time=run.queue_wait + slow,
        )

    live = SequentialJudge(watch=["execution_time", "total_time"])
    for pairs, (new, old) in enumerate(zip(candidate, baseline, strict=True), start=1):
        live.add_pair(new, old)
        assert live.answer() is not Answer.WORSE
        if pairs == 30:
            # Three of 30 runs 1,000 times slower would double a mean of log ratios.
            early = live.judgement().figure(Figure.EXECUTION_TIME).estimate
            assert early is not None
            assert early < 1.3
    execution = live.judgement().figure(Figure.EXECUTION_TIME)
    assert execution.estimate is not None
    assert 0.85 < execution.estimate < 1.15


def test_durations_under_the_floor_count_as_the_floor() -> None:
    fast = RunSample(failed=False, queue_wait=0.001, execution_time=30.0, total_time=30.001)
    slower = RunSample(failed=False, queue_wait=0.05, execution_time=30.0, total_time=30.05)

    floored = judge([slower] * 40, [fast] * 40, watch=["queue_wait"])
    unfloored = judge(
        [slower] * 40, [fast] * 40, watch=["queue_wait"], policy=JudgePolicy(time_floor=0.0001)
    )

    assert floored.answer is Answer.NOT_WORSE
    assert unfloored.answer is Answer.WORSE
    assert unfloored.figure("queue_wait").estimate == pytest.approx(50)


def test_failed_runs_count_in_the_failure_rate_and_queue_wait_only() -> None:
    # The candidate's failed runs are very slow, its succeeded runs as fast as RQ's.
    slow_failure = RunSample(failed=True, queue_wait=2.0, execution_time=6000.0, total_time=6002.0)
    candidate = [slow_failure if i % 10 == 0 else OK for i in range(100)]
    verdict = judge(candidate, [OK] * 100)

    execution = verdict.figure(Figure.EXECUTION_TIME)
    assert (execution.candidate_runs, execution.baseline_runs) == (90, 100)
    assert execution.answer is Answer.NOT_WORSE
    assert verdict.figure(Figure.QUEUE_WAIT).candidate_runs == 100
    assert verdict.figure(Figure.FAILURE_RATE).candidate_value == pytest.approx(10.0)


# -- the two forms ------------------------------------------------------------------------


def test_the_stateless_and_streaming_forms_agree_whatever_the_arrival_order() -> None:
    candidate = runs(130, seed=11, failure=0.1, slowdown=1.3)
    baseline = runs(170, seed=12, failure=0.05)
    stateless = judge(candidate, baseline)

    one_side_first = SequentialJudge()
    for run in candidate:
        one_side_first.add_candidate(run)
    for run in baseline:
        one_side_first.add_baseline(run)

    assert one_side_first.judgement().as_dict() == stateless.as_dict()
    assert (stateless.candidate_runs, stateless.baseline_runs) == (130, 170)
    assert stateless.figure(Figure.FAILURE_RATE).pairs == 130


def test_the_cheap_answer_is_the_full_judgements_answer_at_every_look() -> None:
    candidate, baseline = runs(60, seed=13, failure=0.4), runs(60, seed=14, failure=0.02)
    live = SequentialJudge(watch=["failure_rate", "execution_time"])
    seen = set()
    for new, old in zip(candidate, baseline, strict=True):
        live.add_pair(new, old)
        full = live.judgement()
        assert live.answer() is full.answer
        assert live.figure_answers() == {f.figure: f.answer for f in full.figures}
        seen.add(full.answer)
    assert Answer.INCONCLUSIVE in seen
    assert Answer.WORSE in seen


@pytest.mark.parametrize("seed", range(6))
def test_every_answer_agrees_with_its_bounds(seed: int) -> None:
    rng = random.Random(seed)
    candidate = runs(
        rng.randint(20, 150),
        seed=100 + seed,
        failure=rng.choice([0.0, 0.05, 0.3]),
        slowdown=rng.choice([1.0, 1.25, 2.0]),
    )
    verdict = judge(candidate, runs(rng.randint(20, 150), seed=200 + seed, failure=0.05))
    for figure in verdict.figures:
        assert figure.lower is not None
        assert figure.upper is not None
        assert figure.estimate is not None
        assert figure.lower <= figure.estimate <= figure.upper
        assert (figure.answer is Answer.WORSE) == (figure.lower > figure.threshold)
        assert (figure.answer is Answer.NOT_WORSE) == (figure.upper < figure.threshold)


# -- sanity: more evidence of harm never looks better ----------------------------------------


def test_more_candidate_failures_never_lower_the_bounds() -> None:
    bounds = []
    for failures in range(0, 31, 3):
        candidate = [FAILED] * failures + [OK] * (100 - failures)
        figure = judge(candidate, every(0, 100), watch=["failure_rate"]).figure("failure_rate")
        bounds.append((figure.lower, figure.estimate, figure.upper))
    for before, after in itertools.pairwise(bounds):
        assert all(
            b is not None and a is not None and a >= b for b, a in zip(before, after, strict=True)
        )


def test_a_larger_slowdown_gives_a_larger_estimate_and_bounds() -> None:
    baseline = runs(80, seed=15)
    figures = [
        judge(runs(80, seed=16, slowdown=slow), baseline).figure(Figure.EXECUTION_TIME)
        for slow in (0.8, 1.0, 1.2, 1.5, 2.0)
    ]
    for before, after in itertools.pairwise(figures):
        assert before.estimate is not None
        assert after.estimate is not None
        assert after.estimate > before.estimate
        assert before.lower is not None
        assert after.lower is not None
        assert after.lower > before.lower
        assert before.upper is not None
        assert after.upper is not None
        assert after.upper > before.upper


def test_higher_confidence_widens_the_bounds() -> None:
    candidate, baseline = runs(100, seed=17, failure=0.1), runs(100, seed=18, failure=0.05)
    widths = []
    for confidence in (0.8, 0.9, 0.95, 0.99):
        figure = judge(candidate, baseline, policy=JudgePolicy(confidence=confidence)).figure(
            Figure.FAILURE_RATE
        )
        assert figure.lower is not None
        assert figure.upper is not None
        widths.append(figure.upper - figure.lower)
    assert widths == sorted(widths)
    assert widths[0] < widths[-1]


# -- policy, watch, samples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("confidence", 1.0, "confidence must be"),
        ("confidence", 0.3, "confidence must be"),
        ("confidence", math.nan, "confidence must be"),
        ("max_failure_increase", 0.0, "max_failure_increase must be"),
        ("max_failure_increase", 5.0, "max_failure_increase must be"),
        ("max_time_ratio", 1.0, "max_time_ratio must be"),
        ("max_time_ratio", math.inf, "max_time_ratio must be"),
        ("min_runs", 0, "min_runs must be"),
        ("min_runs", 2.5, "min_runs must be"),
        ("min_runs", True, "min_runs must be"),
        ("time_floor", 0.0, "time_floor must be"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_knob(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JudgePolicy(**{field: value})  # type: ignore[arg-type]


def test_the_default_policy() -> None:
    policy = JudgePolicy()

    assert (policy.confidence, policy.max_failure_increase, policy.max_time_ratio) == (
        0.95,
        0.05,
        1.2,
    )
    assert policy.min_runs == 20
    assert policy.as_dict()["max_time_ratio"] == 1.2


def test_watch_names_known_figures_only() -> None:
    with pytest.raises(ValueError, match=r"no figure 'p95'.*failure_rate, queue_wait"):
        judge([OK], [OK], watch=["failure_rate", "p95"])
    with pytest.raises(ValueError, match="at least one figure"):
        SequentialJudge(watch=[])
    assert SequentialJudge(watch="queue_wait").watch == {Figure.QUEUE_WAIT}


def test_a_run_sample_from_timestamps() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    sample = RunSample.of(
        failed=False,
        accepted=at,
        started=at + timedelta(seconds=3),
        finished=at + timedelta(seconds=63),
    )
    assert (sample.queue_wait, sample.execution_time, sample.total_time) == (3.0, 60.0, 63.0)

    early_start = RunSample.of(
        failed=True, accepted=at, started=at - timedelta(seconds=1), finished=at
    )
    assert early_start.queue_wait == 0.0

    never_started = RunSample.of(failed=True, accepted=at, started=None, finished=at)
    assert never_started.queue_wait is None
    assert never_started.total_time is None
    assert never_started.value(Figure.FAILURE_RATE) == 1.0


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_run_sample_refuses_an_impossible_time(value: float) -> None:
    with pytest.raises(ValueError, match="execution_time must be a finite number"):
        RunSample(failed=False, execution_time=value)


# -- what a person reads ------------------------------------------------------------------------


def test_the_sentence_for_not_worse_names_figures_bounds_margins_and_runs() -> None:
    verdict = judge([OK] * 212, [OK] * 208, watch=["failure_rate", "execution_time"])

    sentence = verdict.sentence()
    assert sentence.startswith(
        "Prefect is not worse than RQ on failure rate (+0.0 points, 95% bounds "
    )
    assert "; margin 5 points) and execution time (x1.00, bounds x" in sentence
    assert sentence.endswith("; margin x1.2), over 212 and 208 runs.")
    assert "queue wait" not in sentence  # not watched


def test_the_sentence_for_worse_names_only_the_worse_figures() -> None:
    verdict = judge(every(2, 40), every(0, 40), watch=["failure_rate", "queue_wait"])

    sentence = verdict.sentence(candidate="prefect", baseline="rq")
    assert sentence.startswith(
        "prefect is worse than rq on failure rate (+50.0 points, 95% bounds +"
    )
    assert "queue wait" not in sentence
    assert sentence.endswith("over 40 and 40 runs.")


def test_as_dict_is_json_with_every_figure() -> None:
    verdict = judge(runs(40, seed=19, failure=0.1), runs(40, seed=20))
    data = json.loads(json.dumps(verdict.as_dict()))

    assert data["answer"] == verdict.answer.value
    assert data["watched"] == [f.value for f in ALL_FIGURES]
    assert (data["candidate_runs"], data["baseline_runs"]) == (40, 40)
    assert data["policy"]["confidence"] == 0.95
    assert set(data["figures"]) == {f.value for f in ALL_FIGURES}
    failure = data["figures"]["failure_rate"]
    assert failure["unit"] == "points"
    assert data["figures"]["total_time"]["unit"] == "ratio"
    assert {"estimate", "lower", "upper", "threshold", "more_runs", "pairs", "text"} <= set(failure)
    assert data["sentence"] == verdict.sentence()


def test_expected_wait() -> None:
    assert expected_wait(30, 60.0) == timedelta(minutes=30)
    assert expected_wait(0, 60.0) == timedelta(0)
    assert expected_wait(30, 0.0) is None
    assert expected_wait(None, 60.0) is None


def test_margins_finer_than_the_judge_resolves_are_refused() -> None:
    with pytest.raises(ValueError, match=r"max_time_ratio must be a number of at least 1\.01"):
        JudgePolicy(max_time_ratio=1.0000000000000002)
    with pytest.raises(ValueError, match=r"max_failure_increase must be a number from 0\.005"):
        JudgePolicy(max_failure_increase=0.001)


@pytest.mark.parametrize("figure", list(Figure))
def test_the_finest_margins_at_the_highest_confidence_can_still_be_decided(figure: Figure) -> None:
    """Planning counts pairs one by one: at the finest margins it must still end well
    inside the projection's reach (it used to search a million pairs for 1 + 1e-16)."""
    policy = JudgePolicy(
        max_time_ratio=FINEST_TIME_RATIO,
        max_failure_increase=FINEST_FAILURE_INCREASE,
        confidence=0.999,
    )
    assert 1 < min_decidable_runs(policy, figure) < 10_000
