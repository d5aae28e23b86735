"""How often the judge decides wrongly, and how fast it decides rightly, on simulated canaries.

No service is needed: finished runs are drawn in this process and fed, one pair at a
time, to figway's real judge (``gateway.reports.judge.SequentialJudge``), which is
consulted after every new pair, as a live guard is, up to 500 runs a side, at the
default policy (95% confidence, margins of 5 points and x1.2, ``min_runs`` 20),
watching all four figures. Each simulated run:

- fails with probability ``p`` (a Bernoulli draw);
- waits in the queue ``2 s * slowdown * e^(sigma Z)`` and executes for
  ``60 s * slowdown * e^(sigma Z')`` (lognormal, spread ``sigma``; ``Z``, ``Z'``
  independent standard normals); total time = queue wait + execution time;
- in the heavy-tail scenarios, with probability 1%, executes 50 times longer.

The same runs are fed to the **old judge**, which this module holds a copy of (the
gateway's is going away): "worse" when the candidate's failure rate is more than 5
points above the baseline's, or its p95 total time (nearest rank) more than 1.5 times
the baseline's, from 20 runs a side, looked at after every pair; once it says worse
it stays worse (a guard trip is latched).

Scenarios:

- A/A: both sides draw from one distribution, for failure rates 0%, 2%, 5%, 10% and
  spreads 0.2, 0.5, 1.0. Target (issue 14): "worse" at any look in at most 1% of
  canaries. Also reported: how many end "not worse" at 500 runs, and when the first
  "not worse" came (median and 90th percentile).
- Power: the candidate is worse. Targets: failure rate 2% -> 20% caught within 200
  runs a side in at least 95% of canaries; durations x2 caught within 50 runs a side
  in at least 95% (at sigma 0.5; sigma 1.0 is reported beside it). Also reported:
  10% -> 30% and x1.5, and the median runs to detection for each.
- Heavy tails: A/A with 1% of runs 50 times slower on both sides, and with such runs
  on the candidate only (typical runs unchanged: not a slowdown the x1.2 margin means).
- At the margin: the truth is exactly +5 points, or exactly x1.2, with only that
  figure watched; both answers are then wrong, and each must come up at most 5% of
  the time (the judge's guarantee, per figure).

Every scenario draws from its own ``random.Random``, seeded by ``--seed``, the
scenario's name and the block of canaries, so a run is reproducible whatever the
number of worker processes. Progress goes to stderr, the tables to stdout (and, with
``--json PATH``, every figure to a file). `make bench-decisions` runs the full variant
(2,000 canaries per A/A scenario, 1,000 per other scenario): about five and a half
minutes on 2 cores; ``--quick`` (200 and 100): about 35 s. ``docs/decisions.md``
reports and reads a full run.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.reports.judge import (
    ALL_FIGURES,
    Answer,
    Figure,
    JudgePolicy,
    RunSample,
    SequentialJudge,
)

__all__ = ["SCENARIOS", "Scenario", "main", "old_judge_says_worse", "run_scenario"]

#: Runs a side after which a canary stops.
MAX_PAIRS = 500
#: Canaries per scenario: full run / --quick.
CANARIES = {"aa": 2_000, "power": 1_000, "tails": 1_000, "edge": 1_000}
QUICK_CANARIES = {"aa": 200, "power": 100, "tails": 100, "edge": 100}
#: Canaries simulated per task handed to a worker process.
BLOCK = 50

QUEUE_MEDIAN = 2.0
EXECUTION_MEDIAN = 60.0

#: The old point-estimate rule (gateway/routing/guard.py before issue 14).
OLD_MIN_RUNS = 20
OLD_FAILURE_MARGIN = 0.05
OLD_P95_RATIO = 1.5

#: Issue 14's targets.
AA_TARGET = 0.01
POWER_TARGET = 0.95


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str  # "aa", "power", "tails" or "edge" (at the margin)
    baseline_failure: float
    candidate_failure: float
    sigma: float
    slowdown: float = 1.0  # the candidate's durations, times this
    outlier_share: float = 0.0  # runs that execute outlier_factor times longer
    outlier_factor: float = 50.0
    outliers_on_baseline: bool = True
    within: int | None = None  # power: caught within this many runs a side...
    target: bool = False  # ...in at least 95% of canaries is one of issue 14's targets
    watch: tuple[Figure, ...] = ALL_FIGURES  # what the judge watches


def _scenarios() -> tuple[Scenario, ...]:
    scenarios = [
        Scenario(f"A/A fail {p:.0%} sigma {s}", "aa", p, p, s)
        for p in (0.0, 0.02, 0.05, 0.10)
        for s in (0.2, 0.5, 1.0)
    ]
    scenarios += [
        Scenario("fail 2% -> 20%, sigma 0.5", "power", 0.02, 0.20, 0.5, within=200, target=True),
        Scenario("fail 10% -> 30%, sigma 0.5", "power", 0.10, 0.30, 0.5, within=200),
        Scenario(
            "x2 slower, fail 2%, sigma 0.5", "power", 0.02, 0.02, 0.5, 2.0, within=50, target=True
        ),
        Scenario("x2 slower, fail 2%, sigma 1.0", "power", 0.02, 0.02, 1.0, 2.0, within=50),
        Scenario("x1.5 slower, fail 2%, sigma 0.5", "power", 0.02, 0.02, 0.5, 1.5, within=50),
        Scenario("x1.5 slower, fail 2%, sigma 1.0", "power", 0.02, 0.02, 1.0, 1.5, within=50),
    ]
    scenarios += [
        Scenario(
            "A/A fail 2% sigma 0.5, 1% of runs x50 on both",
            "tails",
            0.02,
            0.02,
            0.5,
            outlier_share=0.01,
        ),
        Scenario(
            "A/A fail 2% sigma 1.0, 1% of runs x50 on both",
            "tails",
            0.02,
            0.02,
            1.0,
            outlier_share=0.01,
        ),
        Scenario(
            "fail 2% sigma 0.5, 1% of runs x50 on the candidate only",
            "tails",
            0.02,
            0.02,
            0.5,
            outlier_share=0.01,
            outliers_on_baseline=False,
        ),
    ]
    scenarios += [
        Scenario(
            "fail 5% -> 10% (+5 points, the margin), sigma 0.5; failure rate watched",
            "edge",
            0.05,
            0.10,
            0.5,
            watch=(Figure.FAILURE_RATE,),
        ),
        Scenario(
            "x1.2 slower (the margin), fail 2%, sigma 0.5; execution time watched",
            "edge",
            0.02,
            0.02,
            0.5,
            1.2,
            watch=(Figure.EXECUTION_TIME,),
        ),
    ]
    return tuple(scenarios)


SCENARIOS = _scenarios()


def _draw(
    rng: random.Random,
    failure: float,
    sigma: float,
    slowdown: float,
    outliers: float,
    factor: float,
) -> RunSample:
    gauss = rng.gauss
    queue = QUEUE_MEDIAN * slowdown * math.exp(sigma * gauss(0.0, 1.0))
    execution = EXECUTION_MEDIAN * slowdown * math.exp(sigma * gauss(0.0, 1.0))
    if outliers and rng.random() < outliers:
        execution *= factor
    return RunSample(
        failed=rng.random() < failure,
        queue_wait=queue,
        execution_time=execution,
        total_time=queue + execution,
    )


class OldJudge:
    """The point-estimate rule the judge replaces, as the guard applied it."""

    def __init__(self) -> None:
        self.runs = [0, 0]
        self.failed = [0, 0]
        self.totals: tuple[list[float], list[float]] = ([], [])

    def add(self, side: int, run: RunSample) -> None:
        self.runs[side] += 1
        self.failed[side] += run.failed
        # The guard timed every judged run, failed ones too, from accepted to finished.
        assert run.total_time is not None
        bisect.insort(self.totals[side], run.total_time)

    def says_worse(self) -> bool:
        return old_judge_says_worse(self.runs, self.failed, self.totals)


def _p95(ordered: Sequence[float]) -> float:
    # Nearest rank, rounded first, as gateway.routing.guard.percentile did.
    return ordered[max(0, math.ceil(round(0.95 * len(ordered), 9)) - 1)]


def old_judge_says_worse(
    runs: Sequence[int], failed: Sequence[int], totals: Sequence[Sequence[float]]
) -> bool:
    """The old rule on (candidate, baseline) counts and sorted total times.

    >>> old_judge_says_worse([20, 20], [2, 0], [[1.0] * 20, [1.0] * 20])
    True
    >>> old_judge_says_worse([19, 19], [19, 0], [[1.0] * 19, [1.0] * 19])
    False
    """
    if min(runs) < OLD_MIN_RUNS:
        return False
    if failed[0] / runs[0] - failed[1] / runs[1] > OLD_FAILURE_MARGIN:
        return True
    new, old = _p95(totals[0]), _p95(totals[1])
    return bool(old) and new / old > OLD_P95_RATIO


@dataclass(frozen=True)
class CanaryResult:
    worse_at: int | None  # first pair the new judge said worse
    not_worse_at: int | None  # first pair it said not worse
    end: str  # its answer after the last pair
    old_worse_at: int | None  # first pair the old judge said worse


def run_canary(scenario: Scenario, rng: random.Random, *, max_pairs: int) -> CanaryResult:
    """One canary: pairs until max_pairs (or, in a power scenario, until both judges said worse)."""
    live = SequentialJudge(watch=scenario.watch, policy=JudgePolicy())
    old = OldJudge()
    s = scenario
    base_outliers = s.outlier_share if s.outliers_on_baseline else 0.0
    worse_at = not_worse_at = old_at = None
    answer = Answer.INCONCLUSIVE
    for pair in range(1, max_pairs + 1):
        candidate = _draw(
            rng, s.candidate_failure, s.sigma, s.slowdown, s.outlier_share, s.outlier_factor
        )
        baseline = _draw(rng, s.baseline_failure, s.sigma, 1.0, base_outliers, s.outlier_factor)
        live.add_pair(candidate, baseline)
        answer = live.answer()
        if answer is Answer.WORSE and worse_at is None:
            worse_at = pair
        elif answer is Answer.NOT_WORSE and not_worse_at is None:
            not_worse_at = pair
        if old_at is None:
            old.add(0, candidate)
            old.add(1, baseline)
            if old.says_worse():
                old_at = pair
        if s.group == "power" and worse_at is not None and old_at is not None:
            break
    return CanaryResult(worse_at, not_worse_at, answer.value, old_at)


def run_scenario(
    scenario: Scenario, *, seed: int, first: int, count: int, max_pairs: int = MAX_PAIRS
) -> list[CanaryResult]:
    """Canaries first..first+count-1 of a scenario, each block from its own seeded stream."""
    rng = random.Random(f"{seed}:{scenario.name}:{first}")
    return [run_canary(scenario, rng, max_pairs=max_pairs) for _ in range(count)]


# -- summaries ----------------------------------------------------------------------------


def _share(hits: int, total: int) -> float:
    return hits / total if total else 0.0


def _upper95(hits: int, total: int) -> float:
    """The Wilson score upper 95% bound of a share: is a 1% target resolved?"""
    if not total:
        return 1.0
    z = 1.96
    p = hits / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre + spread) / (1 + z * z / total)


def _lower95(hits: int, total: int) -> float:
    if not total:
        return 0.0
    z = 1.96
    p = hits / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - spread) / (1 + z * z / total)


def _quantile(values: Sequence[int], share: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarise(scenario: Scenario, results: Sequence[CanaryResult]) -> dict[str, Any]:
    total = len(results)
    worse = [r.worse_at for r in results if r.worse_at is not None]
    old = [r.old_worse_at for r in results if r.old_worse_at is not None]
    not_worse = [r.not_worse_at for r in results if r.not_worse_at is not None]
    summary: dict[str, Any] = {
        "scenario": asdict(scenario),
        "canaries": total,
        "worse": len(worse),
        "worse_share": _share(len(worse), total),
        "worse_upper95": _upper95(len(worse), total),
        "worse_median_pairs": _quantile(worse, 0.5),
        "not_worse_first": len(not_worse),
        "not_worse_upper95": _upper95(len(not_worse), total),
        "not_worse_first_median_pairs": _quantile(not_worse, 0.5),
        "not_worse_first_p90_pairs": _quantile(not_worse, 0.9),
        "not_worse_end_share": _share(sum(r.end == "not_worse" for r in results), total),
        "old_worse": len(old),
        "old_worse_share": _share(len(old), total),
        "old_worse_within_250_share": _share(sum(a <= 250 for a in old), total),
        "old_worse_median_pairs": _quantile(old, 0.5),
    }
    if scenario.within is not None:
        caught = sum(a <= scenario.within for a in worse)
        summary["caught_within"] = caught
        summary["caught_within_share"] = _share(caught, total)
        summary["caught_within_lower95"] = _lower95(caught, total)
        summary["old_caught_within_share"] = _share(sum(a <= scenario.within for a in old), total)
    return summary


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _runs(value: int | None) -> str:
    return "never" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def render(summaries: Sequence[dict[str, Any]], *, info: dict[str, Any]) -> str:
    aa = [s for s in summaries if s["scenario"]["group"] == "aa"]
    power = [s for s in summaries if s["scenario"]["group"] == "power"]
    tails = [s for s in summaries if s["scenario"]["group"] == "tails"]
    edge = [s for s in summaries if s["scenario"]["group"] == "edge"]
    out = [
        f"### Judging canaries: the judge against the old point-estimate rule ({info['command']})",
        "",
        f"Seed {info['seed']}, up to {info['max_pairs']} runs a side, judged after every "
        f"pair at the default policy; {info['seconds']:.0f} s on {info['workers']} "
        f"process(es), Python {info['python']}, commit {info['commit']}.",
        "",
        '#### A/A: both sides identical (target: "worse" in at most 1% of canaries)',
        "",
    ]
    rows = []
    for s in aa:
        sc = s["scenario"]
        met = "met" if s["worse_share"] <= AA_TARGET else "MISSED"
        rows.append(
            [
                f"fail {sc['baseline_failure']:.0%}, sigma {sc['sigma']}",
                str(s["canaries"]),
                f"{_pct(s['worse_share'])} (≤ {_pct(s['worse_upper95'])})",
                met,
                _pct(s["not_worse_end_share"]),
                _runs(s["not_worse_first_median_pairs"]),
                _runs(s["not_worse_first_p90_pairs"]),
                _pct(s["old_worse_within_250_share"]),
                _pct(s["old_worse_share"]),
            ]
        )
    out.append(
        _table(
            [
                "scenario",
                "canaries",
                "judge: worse (95% upper)",
                "target",
                "judge: not worse at 500",
                "first not worse, median",
                "p90",
                "old: worse within 250",
                "old: within 500",
            ],
            rows,
        )
    )
    out += ["", "#### Power: the candidate is worse", ""]
    rows = []
    for s in power:
        sc = s["scenario"]
        target = sc["within"]
        met = "(reported)"
        if sc["target"]:
            met = "met" if s["caught_within_share"] >= POWER_TARGET else "MISSED"
        rows.append(
            [
                sc["name"],
                str(s["canaries"]),
                f"{_pct(s['caught_within_share'])} within {target}",
                met,
                _runs(s["worse_median_pairs"]),
                _pct(s["worse_share"]),
                f"{_pct(s['old_caught_within_share'])} within {target}",
                _runs(s["old_worse_median_pairs"]),
            ]
        )
    out.append(
        _table(
            [
                "scenario",
                "canaries",
                "judge: caught",
                "target ≥ 95%",
                "judge: median runs",
                "judge: caught within 500",
                "old: caught",
                "old: median runs",
            ],
            rows,
        )
    )
    out += ["", "#### Heavy tails: 1% of runs execute 50 times longer", ""]
    rows = []
    for s in tails:
        rows.append(
            [
                s["scenario"]["name"],
                str(s["canaries"]),
                f"{_pct(s['worse_share'])} (≤ {_pct(s['worse_upper95'])})",
                _pct(s["not_worse_end_share"]),
                _runs(s["not_worse_first_median_pairs"]),
                _pct(s["old_worse_share"]),
            ]
        )
    out.append(
        _table(
            [
                "scenario",
                "canaries",
                "judge: worse (95% upper)",
                "judge: not worse at 500",
                "first not worse, median",
                "old: worse within 500",
            ],
            rows,
        )
    )
    out += [
        "",
        "#### At the margin: the truth is exactly the margin (each answer's error is at most 5%)",
        "",
    ]
    rows = []
    for s in edge:
        rows.append(
            [
                s["scenario"]["name"],
                str(s["canaries"]),
                f"{_pct(s['worse_share'])} (≤ {_pct(s['worse_upper95'])})",
                f"{_pct(s['not_worse_first'] / s['canaries'])} (≤ {_pct(s['not_worse_upper95'])})",
                _pct(s["old_worse_share"]),
            ]
        )
    out.append(
        _table(
            ["scenario", "canaries", "judge: worse", "judge: not worse", "old: worse within 500"],
            rows,
        )
    )
    return "\n".join(out)


def _blocks(total: int) -> Iterator[tuple[int, int]]:
    for first in range(0, total, BLOCK):
        yield first, min(BLOCK, total - first)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.decisions", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="200 A/A and 100 power canaries a scenario"
    )
    parser.add_argument("--seed", type=int, default=14, help="the seed of every scenario's stream")
    parser.add_argument(
        "--canaries", type=int, help="canaries per A/A, heavy-tail and at-the-margin scenario"
    )
    parser.add_argument("--power-canaries", type=int, help="canaries per power scenario")
    parser.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="runs a side per canary")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)

    counts = dict(QUICK_CANARIES if args.quick else CANARIES)
    if args.canaries is not None:
        counts["aa"] = counts["tails"] = counts["edge"] = args.canaries
    if args.power_canaries is not None:
        counts["power"] = args.power_canaries
    scenarios = [s for s in SCENARIOS if not args.only or args.only in s.name]
    started = time.perf_counter()
    results: dict[str, list[tuple[int, list[CanaryResult]]]] = {s.name: [] for s in scenarios}
    tasks = [(s, first, count) for s in scenarios for first, count in _blocks(counts[s.group])]
    done_canaries, all_canaries = 0, sum(count for _, _, count in tasks)
    print(
        f"{len(scenarios)} scenarios, {all_canaries} canaries, {args.workers} process(es)",
        file=sys.stderr,
        flush=True,
    )
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = {
            pool.submit(
                run_scenario, s, seed=args.seed, first=first, count=count, max_pairs=args.max_pairs
            ): (s, first, count)
            for s, first, count in tasks
        }
        for future in as_completed(futures):
            scenario, first, count = futures[future]
            results[scenario.name].append((first, future.result()))
            done_canaries += count
            if sum(len(block) for _, block in results[scenario.name]) == counts[scenario.group]:
                print(
                    f"{done_canaries}/{all_canaries} canaries, "
                    f"{time.perf_counter() - started:.0f} s: {scenario.name} done",
                    file=sys.stderr,
                    flush=True,
                )
    summaries = []
    for scenario in scenarios:
        blocks = sorted(results[scenario.name], key=lambda block: block[0])
        summaries.append(summarise(scenario, [r for _, block in blocks for r in block]))
    command = "python -m bench.decisions" + (" --quick" if args.quick else "")
    if args.seed != 14:
        command += f" --seed {args.seed}"
    info = {
        "command": command,
        "seed": args.seed,
        "max_pairs": args.max_pairs,
        "seconds": time.perf_counter() - started,
        "workers": args.workers,
        "python": sys.version.split()[0],
        "commit": _commit(),
    }
    markdown = render(summaries, info=info)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "scenarios": summaries}, indent=2) + "\n")
    return 0


def _commit() -> str:
    try:
        from bench.report import machine

        return str(machine()["figway_commit"])
    except Exception:  # a benchmark still reports when git or a driver is missing
        return "unknown"
