"""The judge: is the candidate (Prefect) worse than the baseline (RQ), not worse, or too early to say?

One module answers that question for the guard, the comparison report, readiness and
promotion, on four figures, each defined here once (``docs/decisions.md`` repeats
them):

- ``failure_rate``: failed / (succeeded + failed). Cancelled runs are judged in
  nothing: a kill is nobody's fault, so callers never pass them.
- ``queue_wait``: accepted (the backend took the run) to its first node running, for
  every judged run that started a node.
- ``execution_time``: first node running to finished, for succeeded runs.
- ``total_time``: accepted to finished, for succeeded runs.

A failed run's time ends at its failure, so it says how soon the run broke, not how
long the work takes: it counts in the failure rate and its queue wait, never in the
two times that end at "finished". Durations shorter than the policy's ``time_floor``
count as the floor: a ratio of milliseconds is clock noise, not a regression.

**Three answers**, per figure and overall (over the figures a caller watches):

- ``worse``: the candidate is worse than the baseline by more than the margin, at the
  stated confidence (one watched figure worse makes the whole judgement worse);
- ``not_worse``: the data rule out a difference beyond the margin at that confidence
  (non-inferiority; every watched figure must be shown not worse);
- ``inconclusive``: neither yet, with the runs a side a decision should take.

**Why not a point estimate.** A live guard looks after every finished run. A fixed
threshold on point estimates (the rule this module replaces: a failure rate 5 points
above, a p95 1.5 times the baseline's, from 20 runs a side) crosses on noise more and
more often the more it is looked at: on identical backends it rolled back a quarter
to two thirds of all canaries (issue 14). The judge here uses *anytime-valid*
inference: its error rates hold however often, and for however long, it is
consulted, so a guard may ask it after every run.

**Method: testing by betting.** The runs of each figure are paired in the order they
finished (the i-th candidate run with the i-th baseline run; a side that is ahead
waits for partners). Each pair gives one value ``y``: for the failure rate the
difference of the two outcomes (-1, 0 or +1), for a time the log of the ratio of the
two durations. Then, for a margin ``d`` (``max_failure_increase``, or the log of
``max_time_ratio``), two gamblers bet on the pairs as they arrive, each staking a
share ``lambda_i`` of its capital, fixed before the pair is seen:

- "worse" bets on ``y`` being above ``d``: its capital is
  ``K+ = prod(1 + lambda_i * x_i)``, with ``x_i`` the pair's score at ``d``;
- "not worse" bets on ``y`` being below ``d``: ``K- = prod(1 - lambda_i * x_i)``.

If the candidate were not worse (the truth at or below the margin), the "worse"
gambler's capital would be a nonnegative supermartingale starting at 1, and by
Ville's inequality it reaches ``1 / (1 - confidence)`` with probability at most
``1 - confidence``, ever. So "worse" is answered when ``K+`` reaches that level, and
"not worse" when ``K-`` does; each answer's error rate is at most ``1 - confidence``
at every look, for ever. Inverting the same bets over every margin ``theta`` in
place of ``d`` gives the confidence bounds that every answer carries: the lower bound
is the largest ``theta`` the "worse" gambler has beaten, the upper bound the smallest
one the "not worse" gambler has beaten. Each is a one-sided confidence sequence at
``confidence``, and an answer always agrees with its bounds (worse exactly when the
lower bound is above the margin, not worse exactly when the upper one is below it).
The guarantee is per figure: the overall answer is "worse" when any watched figure
is, so with ``k`` figures watched, all of them exactly at their margins, "worse" may
come up to ``k * (1 - confidence)`` of the time; on identical backends, far from the
margins, it comes far less often (``docs/decisions.md`` has the figures).
The bets are Waudby-Smith and Ramdas's "hedged capital" for bounded means, taken one
side at a time, with a variant of their predictable plug-in stake:
``lambda_i = min(cap, sqrt(2 log(1 / (1 - confidence)) / (v_i (i + h))))``, where
``v_i`` is the variance of the scores before pair ``i``. It shrinks like
``1 / sqrt(i)``, so the bounds tighten like a confidence interval's, at a modest
price for validity at every look; the cap (0.75 of what a pair could lose for
failures, 0.4 for times) keeps early pairs from deciding alone, and is what holds
false alarms on identical backends well under 1%.

**Failures** are bounded (``y`` in [-1, 1]), so the bets are valid with no
assumption beyond this: the runs on each side are independent draws of one failure
probability (no drift within the sequence). The figure is the difference of the two
failure probabilities, in points.

**Times** are judged on the log scale, by a robust score: the pair's log ratio less
the margin, clipped at ``+-C_i`` and divided by it (Huber's psi function), where
``C_i`` is ``_CLIP`` times a robust running spread of the log ratios, fixed before the
pair is seen. A run 50 times slower than usual moves the evidence no more than a run
somewhat slower than usual, so a handful of huge outliers cannot decide on their own,
and the scores are bounded, as betting needs. The figure is the centre of the log
ratios (Huber's M-estimate of location; the mean log ratio when nothing is clipped),
reported as a ratio: candidate over baseline. The clipped score has the sign of
(centre - margin) when the pair's log ratio is symmetric about its centre, which
holds exactly on identical backends (a difference of two independent draws of one
distribution is symmetric) and whenever the candidate's log durations are the
baseline's shifted ("1.3 times slower" across the board). When the two shapes differ
(only the tail grew, say) the figure is a location of the log ratios, not of either
tail: the judge says whether typical runs got slower, and a tail that grew alone
shows late or not at all.

**Assumptions and limits.** Pairing in finish order assumes each side's runs are
exchangeable over the sequence; a regression that starts halfway is found, but more
slowly than one present from the start. Pairs are what the evidence counts, so a side
with far more runs (a 5% canary's baseline) lends only as many runs as the other side
has. The guarantee is for one sequence read from its start: a caller that slides a
window restarts the sequence, and one that resets a guard starts a new one, each with
its own error budget. ``min_runs`` is a floor on answering, not on evidence: below
it on either side the answer is inconclusive, whatever the bets say.

References:

- J. Ville (1939), *Etude critique de la notion de collectif*: the maximal inequality
  for nonnegative supermartingales.
- S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021), "Time-uniform,
  nonparametric, nonasymptotic confidence sequences", *Annals of Statistics* 49(2).
- I. Waudby-Smith, A. Ramdas (2023), "Estimating means of bounded random variables by
  betting", *JRSS B* 86(1): the hedged capital process and the predictable plug-in.
- R. Johari, P. Koomen, L. Pekelis, D. Walsh (2022), "Always valid inference:
  continuous monitoring of A/B tests", *Operations Research* 70(3).
- M. Lindon, C. Sanden, V. Shirikian (2022), "Rapid regression detection in software
  deployments through sequential testing", KDD 2022 (Netflix's canaries).
- P. J. Huber (1964), "Robust estimation of a location parameter", *Annals of
  Mathematical Statistics* 35(1): the clipped score.

>>> ok, slow = RunSample(failed=False, execution_time=10.0), RunSample(failed=False, execution_time=25.0)
>>> verdict = judge([slow] * 60, [ok] * 60, watch=[Figure.EXECUTION_TIME])
>>> verdict.answer, round(verdict.figure(Figure.EXECUTION_TIME).estimate, 6)
(<Answer.WORSE: 'worse'>, 2.5)
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "ALL_FIGURES",
    "FINEST_FAILURE_INCREASE",
    "FINEST_TIME_RATIO",
    "Answer",
    "Figure",
    "FigureJudgement",
    "JudgePolicy",
    "Judgement",
    "RunSample",
    "SequentialJudge",
    "expected_wait",
    "judge",
    "min_decidable_runs",
]


class Figure(StrEnum):
    """What the judge compares; each is defined once, in the module docstring."""

    FAILURE_RATE = "failure_rate"  # failed / (succeeded + failed)
    QUEUE_WAIT = "queue_wait"  # accepted -> first node running, every judged run that started
    EXECUTION_TIME = "execution_time"  # first node running -> finished, succeeded runs
    TOTAL_TIME = "total_time"  # accepted -> finished, succeeded runs

    @property
    def label(self) -> str:
        """The figure's name in a sentence.

        >>> Figure.QUEUE_WAIT.label
        'queue wait'
        """
        return self.value.replace("_", " ")

    @property
    def is_time(self) -> bool:
        """Whether the figure is a duration (judged as a ratio), not the failure rate."""
        return self is not Figure.FAILURE_RATE


#: Every figure, in the order reports show them.
ALL_FIGURES: tuple[Figure, ...] = tuple(Figure)


class Answer(StrEnum):
    """The judge's three answers (the module docstring says what each one means)."""

    WORSE = "worse"
    NOT_WORSE = "not_worse"
    INCONCLUSIVE = "inconclusive"


# -- tuning ------------------------------------------------------------------------------
# Chosen with bench/decisions (docs/decisions.md has the figures); none of them affects
# validity, only how fast an answer comes.

#: The most a gambler stakes on one pair, as a share of what it could lose. Below 1 so
#: that a single pair never wipes out the evidence gathered so far.
_BET_CAP = {False: 0.75, True: 0.4}  # keyed by "is a time figure"
#: The stake shrinks like 1 / sqrt(pairs + this): a larger value bets less at first and
#: keeps the bounds tight for longer (the sweet spot is around a few times this).
_HORIZON = {False: 60.0, True: 15.0}  # keyed by "is a time figure"
#: Times: a pair's log ratio is clipped at this many robust spreads from the centre.
_CLIP = 2.0
#: Times: the spread assumed for log ratios before any pair (1.0 is a factor of e).
_PRIOR_SPREAD = 1.0
#: Times: the smallest clip, in log units (0.1%), so identical durations still score.
_MIN_CLIP = 1e-3
#: "No decision expected": the runs-needed estimate gives up beyond this many pairs.
_MAX_PROJECTION = 1_000_000
#: The finest margins the judge resolves: a 1% slowdown, half a point of failures. Finer
#: ones would need hundreds of thousands of runs a side to ever decide, and planning
#: them (min_decidable_runs) would cost seconds of a gateway's time on every request.
FINEST_TIME_RATIO = 1.01
FINEST_FAILURE_INCREASE = 0.005


def _refuse(name: str, value: float) -> None:
    raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class RunSample:
    """One finished run (succeeded or failed; never a cancelled one), as the judge sees it.

    Times are in seconds, ``None`` when the run never reached that point (a run that
    failed before any node ran has no queue wait). ``execution_time`` and ``total_time``
    of a failed run are ignored: see the module docstring.

    >>> RunSample(failed=False, queue_wait=0.4, execution_time=12.0, total_time=12.4).value(
    ...     Figure.TOTAL_TIME
    ... )
    12.4
    >>> RunSample(failed=True, execution_time=3.0).value(Figure.EXECUTION_TIME) is None
    True
    """

    failed: bool
    queue_wait: float | None = None
    execution_time: float | None = None
    total_time: float | None = None

    def __post_init__(self) -> None:
        # Spelled out rather than looped over: the simulation builds millions of these.
        # "not 0 <= value < inf" also refuses NaN, which would poison every sum after it.
        if self.queue_wait is not None and not 0 <= self.queue_wait < math.inf:
            _refuse("queue_wait", self.queue_wait)
        if self.execution_time is not None and not 0 <= self.execution_time < math.inf:
            _refuse("execution_time", self.execution_time)
        if self.total_time is not None and not 0 <= self.total_time < math.inf:
            _refuse("total_time", self.total_time)

    @classmethod
    def of(
        cls,
        *,
        failed: bool,
        accepted: datetime | None,
        started: datetime | None,
        finished: datetime,
    ) -> RunSample:
        """A run from its timestamps: the one place the three times are computed.

        A worker may start a node before the backend's acceptance is recorded; that
        wait counts as 0, as does any clock skew that would make a time negative.

        >>> t = datetime(2026, 1, 1, 9, 0, 0)
        >>> RunSample.of(
        ...     failed=False,
        ...     accepted=t,
        ...     started=t + timedelta(seconds=2),
        ...     finished=t + timedelta(seconds=32),
        ... )
        RunSample(failed=False, queue_wait=2.0, execution_time=30.0, total_time=32.0)
        """

        def seconds(start: datetime | None, end: datetime | None) -> float | None:
            if start is None or end is None:
                return None
            return max(0.0, (end - start).total_seconds())

        return cls(
            failed=failed,
            queue_wait=seconds(accepted, started),
            execution_time=seconds(started, finished),
            total_time=seconds(accepted, finished) if started is not None else None,
        )

    def value(self, figure: Figure) -> float | None:
        """What this run contributes to ``figure`` (1.0 or 0.0 for the failure rate)."""
        if figure is Figure.FAILURE_RATE:
            return 1.0 if self.failed else 0.0
        if figure is Figure.QUEUE_WAIT:
            return self.queue_wait
        if self.failed:
            return None
        return self.execution_time if figure is Figure.EXECUTION_TIME else self.total_time


@dataclass(frozen=True)
class JudgePolicy:
    """What the judge holds the candidate to; stated in every judgement.

    >>> JudgePolicy().margin(Figure.FAILURE_RATE), JudgePolicy().margin(Figure.TOTAL_TIME)
    (0.05, 1.2)
    >>> JudgePolicy(max_time_ratio=0.9)
    Traceback (most recent call last):
    ...
    ValueError: max_time_ratio must be a number of at least 1.01 (a ratio such as 1.2), not 0.9
    """

    #: Each answer is wrong at most 1 - confidence of the time, at every look.
    confidence: float = 0.95
    #: Failure rate: the increase that matters, in absolute terms (0.05 is 5 points).
    max_failure_increase: float = 0.05
    #: Times: the slowdown that matters, as a ratio (1.2: "more than 1.2 times slower").
    max_time_ratio: float = 1.2
    #: A floor: below this many runs on either side, every answer is inconclusive.
    min_runs: int = 20
    #: Durations under this many seconds count as this many (a ratio of milliseconds is noise).
    time_floor: float = 0.1

    def __post_init__(self) -> None:
        def number(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not (number(self.confidence) and 0.5 <= self.confidence < 1):
            raise ValueError(
                f"confidence must be a number from 0.5 up to (not including) 1, "
                f"not {self.confidence!r}"
            )
        if not (
            number(self.max_failure_increase)
            and FINEST_FAILURE_INCREASE <= self.max_failure_increase < 1
        ):
            raise ValueError(
                f"max_failure_increase must be a number from {FINEST_FAILURE_INCREASE} up to "
                f"(not including) 1 (0.05 is 5 points), not {self.max_failure_increase!r}"
            )
        if not (
            number(self.max_time_ratio)
            and self.max_time_ratio >= FINEST_TIME_RATIO
            and math.isfinite(self.max_time_ratio)
        ):
            raise ValueError(
                f"max_time_ratio must be a number of at least {FINEST_TIME_RATIO} (a ratio "
                f"such as 1.2), not {self.max_time_ratio!r}"
            )
        if not (isinstance(self.min_runs, int) and not isinstance(self.min_runs, bool)) or (
            self.min_runs < 1
        ):
            raise ValueError(f"min_runs must be a whole number >= 1, not {self.min_runs!r}")
        if not (number(self.time_floor) and self.time_floor > 0 and math.isfinite(self.time_floor)):
            raise ValueError(
                f"time_floor must be a number of seconds above 0, not {self.time_floor!r}"
            )

    def margin(self, figure: Figure) -> float:
        """The figure's threshold: a difference of rates, or a ratio of times."""
        return self.max_time_ratio if figure.is_time else self.max_failure_increase

    def as_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "max_failure_increase": self.max_failure_increase,
            "max_time_ratio": self.max_time_ratio,
            "min_runs": self.min_runs,
            "time_floor": self.time_floor,
        }


# -- the evidence on one figure -----------------------------------------------------------


def _clip(value: float, limit: float) -> float:
    return -limit if value < -limit else limit if value > limit else value


class _Bets:
    """The paired values of one figure and the two gamblers' capital at the margin.

    A pair is added in O(1): it updates the stake for the next pair (from what came
    before only, which is what keeps the bets fair) and the two capitals at the
    margin, on which the answer rests. The history is kept so that bounds and the
    point estimate can be computed on demand, by bisection over the margin.
    """

    __slots__ = (
        "_cap_down",
        "_cap_up",
        "_center",
        "_count",
        "_history",
        "_horizon",
        "_log_down",
        "_log_up",
        "_mean",
        "_spread2",
        "_square_sum",
        "_two_log",
        "margin",
        "robust",
        "target",
    )

    def __init__(self, *, robust: bool, margin: float, confidence: float) -> None:
        self.robust = robust  # times: clipped log ratios; failures: plain differences
        self.margin = margin  # in the figure's own units: a difference, or a log ratio
        self.target = math.log(1 / (1 - confidence))  # Ville: capital 1/alpha
        self._two_log = 2 * self.target
        self._horizon = _HORIZON[robust]
        # A gambler may lose at most what it stakes: 1 + stake * score > 0 whatever the
        # pair. Times' scores lie in [-1, 1]; a failure pair's in [-1 - margin, 1 - margin].
        if robust:
            self._cap_up = self._cap_down = _BET_CAP[True]
        else:
            cap = _BET_CAP[False]
            self._cap_up, self._cap_down = cap / (1 + margin), cap / (1 - margin)
        #: (value, clip, stake) of every pair: what bounds and estimates are computed from.
        self._history: list[tuple[float, float, float]] = []
        self._count = 0
        self._log_up = 0.0
        self._log_down = 0.0
        # Running statistics with one pseudo-pair of prior, so the first stakes are sane.
        self._mean = 0.0
        self._square_sum = 1.0 if not robust else 1 / (_CLIP * _CLIP)
        self._center = 0.0
        self._spread2 = _PRIOR_SPREAD * _PRIOR_SPREAD

    @property
    def pairs(self) -> int:
        return self._count

    def add(self, value: float) -> None:
        n = self._count + 1
        # The stake is fixed from the pairs before this one: that is what keeps the bet
        # fair (a supermartingale) whatever the stake's formula.
        variance = self._square_sum / n
        stake = math.sqrt(self._two_log / (max(variance, 1e-12) * (n + self._horizon)))
        if self.robust:
            clip = _CLIP * math.sqrt(self._spread2)
            if clip < _MIN_CLIP:
                clip = _MIN_CLIP
            score = value - self.margin
            score = (-clip if score < -clip else clip if score > clip else score) / clip
            bet = stake if stake < self._cap_up else self._cap_up
            self._log_up += math.log1p(bet * score)
            self._log_down += math.log1p(-bet * score)
            # Then learn from the pair: a winsorised running centre and spread, which
            # a run 50 times slower than usual moves no more than a merely slow one.
            residual = value - self._center
            residual = -clip if residual < -clip else clip if residual > clip else residual
            self._center += residual / (n + 1)
            self._spread2 += (residual * residual - self._spread2) / (n + 1)
            self._square_sum += (residual / clip) ** 2
        else:
            clip = 1.0
            score = value - self.margin
            self._log_up += math.log1p(min(stake, self._cap_up) * score)
            self._log_down += math.log1p(-min(stake, self._cap_down) * score)
            # Welford with a prior pseudo-pair of variance 1 (the widest a pair can have).
            previous = self._mean
            self._mean += (value - previous) / (n + 1)
            self._square_sum += (value - previous) * (value - self._mean)
        self._history.append((value, clip, stake))
        self._count = n

    def answer(self) -> Answer:
        # "worse" first: should both gamblers have won (a truth right at the margin, rare
        # by construction), the guard errs on the side of rolling back.
        if self._log_up >= self.target:
            return Answer.WORSE
        if self._log_down >= self.target:
            return Answer.NOT_WORSE
        return Answer.INCONCLUSIVE

    # -- on demand: O(pairs) per evaluation ------------------------------------------------

    def _scores(self, theta: float) -> Iterator[tuple[float, float, float]]:
        """(score, stake up, stake down) of every pair, for the margin ``theta``."""
        if self.robust:
            for value, clip, stake in self._history:
                bet = min(stake, self._cap_up)
                yield _clip(value - theta, clip) / clip, bet, bet
        else:
            cap = _BET_CAP[False]
            cap_up = cap / (1 + theta) if theta > -1 else math.inf
            cap_down = cap / (1 - theta) if theta < 1 else math.inf
            for value, _, stake in self._history:
                yield value - theta, min(stake, cap_up), min(stake, cap_down)

    def _log_capital(self, theta: float, *, up: bool) -> float:
        total = 0.0
        for score, stake_up, stake_down in self._scores(theta):
            factor = stake_up * score if up else -stake_down * score
            if factor <= -1:
                return -math.inf
            total += math.log1p(factor)
        return total

    def _range(self) -> tuple[float, float]:
        if not self.robust:
            return -1.0, 1.0
        low = min(value - clip for value, clip, _ in self._history)
        high = max(value + clip for value, clip, _ in self._history)
        return low - 1, high + 1

    def bounds(self) -> tuple[float | None, float | None]:
        """(lower, upper) in the figure's own units; None where the data bound nothing yet.

        The lower bound is the largest margin the "worse" gambler has beaten, the upper
        the smallest one the "not worse" gambler has beaten. Its capital moves one way
        with the margin, so bisection finds each.
        """
        if not self._count:
            return None, None
        low, high = self._range()
        lower: float | None = None
        if self._log_capital(low, up=True) >= self.target:
            a, b = low, high
            for _ in range(50):
                mid = (a + b) / 2
                a, b = (mid, b) if self._log_capital(mid, up=True) >= self.target else (a, mid)
            lower = a
        upper: float | None = None
        if self._log_capital(high, up=False) >= self.target:
            a, b = low, high
            for _ in range(50):
                mid = (a + b) / 2
                a, b = (a, mid) if self._log_capital(mid, up=False) >= self.target else (mid, b)
            upper = b
        if not self.robust:
            # The difference of two rates lies in [-1, 1] whatever the data say.
            lower = -1.0 if lower is None else lower
            upper = 1.0 if upper is None else upper
        return lower, upper

    def estimate(self) -> float | None:
        """The point estimate: the mean difference, or the Huber centre of the log ratios."""
        if not self._count:
            return None
        if not self.robust:
            return math.fsum(value for value, _, _ in self._history) / self._count
        low, high = self._range()
        for _ in range(60):
            mid = (low + high) / 2
            push = sum(_clip(value - mid, clip) for value, clip, _ in self._history)
            low, high = (mid, high) if push > 0 else (low, mid)
        return (low + high) / 2

    def pairs_to_decide(self) -> int | None:
        """How many pairs in all, at the current estimates, until an answer is even odds.

        Projects the capital of the gambler the data favour along its expected path:
        each further pair adds about ``stake * drift - stake**2 * spread / 2`` (the
        second-order expansion of ``log(1 + stake * score)``), with the drift and spread
        of the scores seen so far and the stakes the schedule will place. None when the
        data favour neither side enough for a decision within a million pairs.
        """
        n = self._count
        if not n:
            return None
        scores = [score for score, _, _ in self._scores(self.margin)]
        drift = math.fsum(scores) / n
        second = math.fsum(s * s for s in scores) / n
        up = drift > 0
        current = self._log_up if up else self._log_down
        drift = abs(drift)
        cap = self._cap_up if up else self._cap_down  # the same for times
        rate = math.sqrt(self._two_log / max(self._square_sum / (n + 1), 1e-12))

        def capital(pairs: int) -> float:
            first1, first2 = _stake_sums(rate, cap, self._horizon, n + 1, pairs)
            return current + drift * first1 - second * first2 / 2

        if capital(_MAX_PROJECTION) < self.target:
            return None
        low, high = n, n + 1
        while capital(high) < self.target:
            low, high = high, min(2 * high, _MAX_PROJECTION)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if capital(mid) < self.target else (low, mid)
        return high


def _stake_sums(
    rate: float, cap: float, horizon: float, first: int, last: int
) -> tuple[float, float]:
    """Sums of ``min(cap, rate / sqrt(i + horizon))`` and of its square over first..last.

    Closed forms (integrals with a half-step correction) keep the runs-needed estimate
    O(log n) rather than a loop over every future pair.
    """
    if last < first:
        return 0.0, 0.0
    # Pairs before ``turn`` stake the cap; from ``turn`` on the schedule is below it.
    turn = max(first, min(last + 1, math.ceil((rate / cap) ** 2 - horizon)))
    capped = turn - first
    sum1, sum2 = cap * capped, cap * cap * capped
    if turn <= last:
        a, b = turn + horizon - 0.5, last + horizon + 0.5
        sum1 += 2 * rate * (math.sqrt(b) - math.sqrt(a))
        sum2 += rate * rate * math.log(b / a)
    return sum1, sum2


class _FigureStream:
    """One figure's runs on each side, paired in finish order as they come."""

    __slots__ = (
        "answer",
        "bets",
        "figure",
        "floor",
        "is_time",
        "log_floor",
        "runs",
        "values",
        "waiting",
    )

    def __init__(self, figure: Figure, policy: JudgePolicy) -> None:
        self.figure = figure
        threshold = policy.margin(figure)
        self.bets = _Bets(
            robust=figure.is_time,
            margin=math.log(threshold) if figure.is_time else threshold,
            confidence=policy.confidence,
        )
        self.answer = Answer.INCONCLUSIVE  # the bets' answer, kept current (the floor aside)
        self.is_time = figure.is_time
        self.floor = policy.time_floor
        self.log_floor = math.log(policy.time_floor)
        self.runs = [0, 0]  # candidate, baseline: runs that count for this figure
        self.values: tuple[list[float], list[float]] = ([], [])
        # Values (times: their logs) still waiting for a partner on the other side.
        self.waiting: tuple[deque[float], deque[float]] = (deque(), deque())

    def add(self, side: int, value: float) -> None:
        self.runs[side] += 1
        self.values[side].append(value)
        if self.is_time:
            value = math.log(value) if value > self.floor else self.log_floor
        other = self.waiting[1 - side]
        if not other:
            self.waiting[side].append(value)
            return
        # Candidate minus baseline: a difference of outcomes, or the log of a ratio.
        self.bets.add(value - other.popleft() if side == 0 else other.popleft() - value)
        self.answer = self.bets.answer()


# -- judgements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureJudgement:
    """The answer on one figure with the evidence behind it.

    Failure rate: ``estimate``, ``lower``, ``upper`` and ``threshold`` are percentage
    points of difference (candidate minus baseline), ``candidate_value`` and
    ``baseline_value`` failure rates in percent. Times: ratios candidate / baseline,
    and each side's median in seconds. A bound is None where the data bound nothing
    yet. ``more_runs``: for an inconclusive answer, about how many more runs each side
    needs before an answer is likely (None when none is in sight at the current
    estimates); 0 otherwise.
    """

    figure: Figure
    answer: Answer
    watched: bool
    estimate: float | None
    lower: float | None
    upper: float | None
    threshold: float
    confidence: float
    candidate_runs: int
    baseline_runs: int
    pairs: int
    candidate_value: float | None
    baseline_value: float | None
    more_runs: int | None

    @property
    def unit(self) -> str:
        return "ratio" if self.figure.is_time else "points"

    def describe(self, *, confidence: bool = True) -> str:
        """The figure, its estimate, bounds and margin, as the ticket sentence reads them.

        >>> FigureJudgement(
        ...     Figure.FAILURE_RATE, Answer.NOT_WORSE, True, 0.4, -2.1, 2.9, 5.0, 0.95,
        ...     212, 208, 208, 2.4, 2.0, 0,
        ... ).describe()
        'failure rate (+0.4 points, 95% bounds -2.1 to +2.9; margin 5 points)'
        """
        level = f"{self.confidence * 100:g}% bounds" if confidence else "bounds"
        if self.figure.is_time:
            value = "no pairs yet" if self.estimate is None else f"x{self.estimate:.2f}"

            def bound(x: float | None) -> str:
                return "?" if x is None else f"x{x:.2f}"

            margin = f"margin x{self.threshold:g}"
        else:
            value = "no pairs yet" if self.estimate is None else f"{self.estimate:+.1f} points"

            def bound(x: float | None) -> str:
                return "?" if x is None else f"{x:+.1f}"

            margin = f"margin {self.threshold:g} points"
        if self.estimate is None:
            return f"{self.figure.label} ({value}; {margin})"
        return f"{self.figure.label} ({value}, {level} {bound(self.lower)} to {bound(self.upper)}; {margin})"

    def as_dict(self) -> dict[str, Any]:
        def number(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        return {
            "figure": self.figure.value,
            "answer": self.answer.value,
            "watched": self.watched,
            "unit": self.unit,
            "estimate": number(self.estimate),
            "lower": number(self.lower),
            "upper": number(self.upper),
            "threshold": self.threshold,
            "confidence": self.confidence,
            "candidate_runs": self.candidate_runs,
            "baseline_runs": self.baseline_runs,
            "pairs": self.pairs,
            "candidate_value": number(self.candidate_value),
            "baseline_value": number(self.baseline_value),
            "more_runs": self.more_runs,
            "text": self.describe(),
        }


@dataclass(frozen=True)
class Judgement:
    """The overall answer over the watched figures, with every figure's judgement.

    ``worse`` if any watched figure is worse, ``not_worse`` if every watched figure is
    not worse, otherwise ``inconclusive``. ``figures`` holds all four figures (a report
    shows them side by side); only the watched ones decide.
    """

    answer: Answer
    figures: tuple[FigureJudgement, ...]
    candidate_runs: int
    baseline_runs: int
    policy: JudgePolicy
    more_runs: int | None = field(default=0)

    @property
    def watched(self) -> tuple[Figure, ...]:
        return tuple(f.figure for f in self.figures if f.watched)

    def figure(self, figure: Figure | str) -> FigureJudgement:
        """The judgement on one figure (watched or not)."""
        wanted = Figure(figure)
        return next(f for f in self.figures if f.figure is wanted)

    def expected_wait(self, runs_per_hour: float) -> timedelta | None:
        """How long ``more_runs`` should take at this many runs per hour on the slower side."""
        return expected_wait(self.more_runs, runs_per_hour)

    def sentence(self, *, candidate: str = "Prefect", baseline: str = "RQ") -> str:
        """One sentence for a change ticket: the answer, the figures behind it, the runs.

        >>> fig = FigureJudgement(
        ...     Figure.EXECUTION_TIME, Answer.NOT_WORSE, True, 1.03, 0.94, 1.12, 1.2, 0.95,
        ...     212, 208, 208, 30.9, 30.0, 0,
        ... )
        >>> Judgement(Answer.NOT_WORSE, (fig,), 212, 208, JudgePolicy()).sentence()
        'Prefect is not worse than RQ on execution time (x1.03, 95% bounds x0.94 to x1.12; margin x1.2), over 212 and 208 runs.'
        """
        watched = [f for f in self.figures if f.watched]
        runs = f"over {self.candidate_runs} and {self.baseline_runs} runs"

        def listing(items: Sequence[FigureJudgement]) -> str:
            texts = [f.describe(confidence=i == 0) for i, f in enumerate(items)]
            return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]

        if self.answer is Answer.WORSE:
            worse = [f for f in watched if f.answer is Answer.WORSE]
            return f"{candidate} is worse than {baseline} on {listing(worse)}, {runs}."
        if self.answer is Answer.NOT_WORSE:
            return f"{candidate} is not worse than {baseline} on {listing(watched)}, {runs}."
        open_ = [f for f in watched if f.answer is Answer.INCONCLUSIVE]
        done = [f for f in watched if f.answer is Answer.NOT_WORSE]
        text = f"Too early to say whether {candidate} is worse than {baseline} on {listing(open_)}"
        text += f", {runs}"
        floor = self.policy.min_runs
        if min(self.candidate_runs, self.baseline_runs) < floor:
            text += f" (at least {floor} a side needed)"
        if done:
            text += f"; not worse on {listing(done)}"
        if self.more_runs is None:
            text += "; no decision is in sight at the current rates"
        else:
            text += f"; about {self.more_runs} more runs a side should decide"
        return text + "."

    def as_dict(self, *, candidate: str = "Prefect", baseline: str = "RQ") -> dict[str, Any]:
        """The judgement as JSON-ready values (figures keyed by name)."""
        return {
            "answer": self.answer.value,
            "watched": [f.value for f in self.watched],
            "candidate_runs": self.candidate_runs,
            "baseline_runs": self.baseline_runs,
            "more_runs": self.more_runs,
            "policy": self.policy.as_dict(),
            "figures": {f.figure.value: f.as_dict() for f in self.figures},
            "sentence": self.sentence(candidate=candidate, baseline=baseline),
        }


def expected_wait(more_runs: int | None, runs_per_hour: float) -> timedelta | None:
    """How long ``more_runs`` runs a side take at ``runs_per_hour`` (the slower side's rate).

    None when no decision is in sight or nothing runs.

    >>> expected_wait(90, 60.0)
    datetime.timedelta(seconds=5400)
    >>> expected_wait(90, 0.0) is None, expected_wait(None, 10.0) is None
    (True, True)
    """
    if more_runs is None or not runs_per_hour > 0 or not math.isfinite(runs_per_hour):
        return None
    return timedelta(hours=max(0, more_runs) / runs_per_hour)


def _watched(watch: Collection[Figure | str]) -> frozenset[Figure]:
    if isinstance(watch, str):
        watch = [watch]  # one figure named on its own, not its letters
    figures = set()
    for name in watch:
        try:
            figures.add(Figure(name))
        except ValueError:
            known = ", ".join(f.value for f in Figure)
            raise ValueError(f"no figure {name!r}: the judge knows {known}") from None
    if not figures:
        raise ValueError("watch at least one figure")
    return frozenset(figures)


class SequentialJudge:
    """The judge fed one run (or one pair) at a time; each update is O(1).

    ``answer()`` is O(1) as well; ``judgement()`` adds the bounds and estimates, which
    take O(runs) each. ``judge()`` is this, fed a whole history at once.

    >>> live = SequentialJudge(watch=[Figure.FAILURE_RATE])
    >>> for _ in range(25):
    ...     live.add_pair(RunSample(failed=True), RunSample(failed=False))
    >>> live.answer(), live.judgement().figure("failure_rate").lower > 5
    (<Answer.WORSE: 'worse'>, True)
    """

    __slots__ = ("_streams", "_watched", "policy", "watch")

    def __init__(
        self,
        *,
        watch: Collection[Figure | str] = ALL_FIGURES,
        policy: JudgePolicy | None = None,
    ) -> None:
        self.policy = policy or JudgePolicy()
        self.watch = _watched(watch)
        self._streams = tuple(_FigureStream(figure, self.policy) for figure in ALL_FIGURES)
        self._watched = tuple(s for s in self._streams if s.figure in self.watch)

    def add_candidate(self, run: RunSample) -> None:
        """One finished run on the candidate (Prefect)."""
        self._add(0, run)

    def add_baseline(self, run: RunSample) -> None:
        """One finished run on the baseline (RQ)."""
        self._add(1, run)

    def add_pair(self, candidate: RunSample, baseline: RunSample) -> None:
        """One run on each side (the candidate's counted first)."""
        self._add(0, candidate)
        self._add(1, baseline)

    def _add(self, side: int, run: RunSample) -> None:
        # RunSample.value() inlined: this is the simulation's inner loop.
        failures, queue, execution, total = self._streams
        failures.add(side, 1.0 if run.failed else 0.0)
        if run.queue_wait is not None:
            queue.add(side, run.queue_wait)
        if run.failed:
            return
        if run.execution_time is not None:
            execution.add(side, run.execution_time)
        if run.total_time is not None:
            total.add(side, run.total_time)

    @property
    def candidate_runs(self) -> int:
        return self._streams[0].runs[0]

    @property
    def baseline_runs(self) -> int:
        return self._streams[0].runs[1]

    def _figure_answer(self, stream: _FigureStream) -> Answer:
        runs = stream.runs
        if runs[0] < self.policy.min_runs or runs[1] < self.policy.min_runs:
            return Answer.INCONCLUSIVE
        return stream.answer

    def answer(self) -> Answer:
        """The overall answer over the watched figures, without bounds (cheap)."""
        # _overall() spelled out: the simulation asks after every pair.
        floor = self.policy.min_runs
        settled = True
        for stream in self._watched:
            runs = stream.runs
            if runs[0] < floor or runs[1] < floor:
                settled = False
            elif stream.answer is Answer.WORSE:
                return Answer.WORSE
            elif stream.answer is not Answer.NOT_WORSE:
                settled = False
        return Answer.NOT_WORSE if settled else Answer.INCONCLUSIVE

    def figure_answers(self) -> dict[Figure, Answer]:
        """Every figure's answer (watched or not), cheaply."""
        return {s.figure: self._figure_answer(s) for s in self._streams}

    def judgement(self) -> Judgement:
        """The full judgement: answers, estimates, bounds, runs, and runs still needed."""
        figures = tuple(self._judge_figure(s) for s in self._streams)
        watched = [f for f in figures if f.watched]
        answer = _overall([f.answer for f in watched])
        more: int | None = 0
        if answer is Answer.INCONCLUSIVE:
            more = _more_overall(watched)
        return Judgement(
            answer=answer,
            figures=figures,
            candidate_runs=self.candidate_runs,
            baseline_runs=self.baseline_runs,
            policy=self.policy,
            more_runs=more,
        )

    def _judge_figure(self, stream: _FigureStream) -> FigureJudgement:
        figure, bets = stream.figure, stream.bets
        answer = self._figure_answer(stream)
        lower, upper = bets.bounds()
        estimate = bets.estimate()
        values = stream.values
        if figure.is_time:
            lower, upper, estimate = (
                None if x is None else math.exp(x) for x in (lower, upper, estimate)
            )
            sides = tuple(_median(v) for v in values)
        else:
            lower, upper, estimate = (
                None if x is None else x * 100 for x in (lower, upper, estimate)
            )
            sides = tuple(100 * sum(v) / len(v) if v else None for v in values)
        more: int | None = 0
        if answer is Answer.INCONCLUSIVE:
            more = self._more_runs(stream)
        return FigureJudgement(
            figure=figure,
            answer=answer,
            watched=figure in self.watch,
            estimate=estimate,
            lower=lower,
            upper=upper,
            threshold=self.policy.margin(figure) * (1 if figure.is_time else 100),
            confidence=self.policy.confidence,
            candidate_runs=stream.runs[0],
            baseline_runs=stream.runs[1],
            pairs=bets.pairs,
            candidate_value=sides[0],
            baseline_value=sides[1],
            more_runs=more,
        )

    def _more_runs(self, stream: _FigureStream) -> int | None:
        """More runs a side (all judged runs, not only those this figure counts)."""
        bets = stream.bets
        pairs = bets.pairs_to_decide() if bets.answer() is Answer.INCONCLUSIVE else bets.pairs
        if pairs is None and bets.pairs == 0:
            # No pair yet, so no rate to project: the fewest pairs that could ever decide
            # (perfect data) is the honest lower bound for planning.
            pairs = _clean_decision(self.policy, stream.figure)
        if pairs is None:
            return None
        floor = self.policy.min_runs
        judged = (self.candidate_runs, self.baseline_runs)
        # A time figure counts only some runs (succeeded, started): scale by that share.
        needed = 0
        for side in (0, 1):
            share = stream.runs[side] / judged[side] if judged[side] else 1.0
            if share <= 0:
                return None
            wanted = max(math.ceil(pairs / share), floor)
            needed = max(needed, wanted - judged[side])
        return max(needed, 1)


def _overall(answers: Sequence[Answer]) -> Answer:
    if Answer.WORSE in answers:
        return Answer.WORSE
    if answers and all(a is Answer.NOT_WORSE for a in answers):
        return Answer.NOT_WORSE
    return Answer.INCONCLUSIVE


def _more_overall(watched: Sequence[FigureJudgement]) -> int | None:
    """Runs until the overall answer is likely decided.

    One figure heading for "worse" decides alone, so the soonest of those; otherwise
    every open figure must reach "not worse", so the latest.
    """
    heading_worse = [
        f.more_runs
        for f in watched
        if f.answer is Answer.INCONCLUSIVE
        and f.more_runs is not None
        and f.estimate is not None
        and f.estimate > f.threshold
    ]
    if heading_worse:
        return min(heading_worse)
    open_ = [f.more_runs for f in watched if f.answer is Answer.INCONCLUSIVE]
    if any(m is None for m in open_):
        return None
    return max((m for m in open_ if m is not None), default=0)


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def judge(
    candidate: Sequence[RunSample],
    baseline: Sequence[RunSample],
    *,
    watch: Collection[Figure | str] = ALL_FIGURES,
    policy: JudgePolicy | None = None,
) -> Judgement:
    """Judge the candidate's finished runs against the baseline's, each in finish order.

    >>> ok = RunSample(failed=False, queue_wait=1.0, execution_time=30.0, total_time=31.0)
    >>> judge([ok] * 5, [ok] * 5).answer  # under min_runs: never an answer
    <Answer.INCONCLUSIVE: 'inconclusive'>
    >>> judge([ok] * 80, [ok] * 80, watch=["execution_time"]).answer
    <Answer.NOT_WORSE: 'not_worse'>
    """
    live = SequentialJudge(watch=watch, policy=policy)
    # Interleaved, as they would have arrived in pairs; the pairing is the same either way.
    for index in range(max(len(candidate), len(baseline))):
        if index < len(candidate):
            live.add_candidate(candidate[index])
        if index < len(baseline):
            live.add_baseline(baseline[index])
    return live.judgement()


@functools.lru_cache(maxsize=64)
def _clean_decision(policy: JudgePolicy, figure: Figure) -> int | None:
    try:
        return min_decidable_runs(policy, figure)
    except ValueError:  # no decision within the projection's reach, even on perfect data
        return None


def min_decidable_runs(
    policy: JudgePolicy | None = None, figure: Figure | str = Figure.FAILURE_RATE
) -> int:
    """The fewest runs a side at which the judge can answer "not worse", on the cleanest data.

    The cleanest data: no failure on either side (failure rate), or identical durations
    (times). With fewer runs even a perfect candidate stays inconclusive, so a guard or
    a promotion step whose ``min_runs`` is below this number is really waiting for this
    one. The floor ``min_runs`` itself is not applied.

    >>> min_decidable_runs(JudgePolicy(max_failure_increase=0.05))
    80
    >>> min_decidable_runs(JudgePolicy(max_time_ratio=1.2), Figure.EXECUTION_TIME)
    26
    >>> min_decidable_runs(JudgePolicy(max_failure_increase=0.01)) > 300
    True
    """
    policy = policy or JudgePolicy()
    wanted = Figure(figure)
    threshold = policy.margin(wanted)
    bets = _Bets(
        robust=wanted.is_time,
        margin=math.log(threshold) if wanted.is_time else threshold,
        confidence=policy.confidence,
    )
    while bets.answer() is not Answer.NOT_WORSE:
        if bets.pairs >= _MAX_PROJECTION:
            raise ValueError(f"{wanted.value}: no decision within {_MAX_PROJECTION} runs")
        bets.add(0.0)
    return bets.pairs
