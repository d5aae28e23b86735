"""Benchmark one routing decision (``Router.decide``) with 1,000 rules, in this process.

No service is needed: the rules files are built as text, checked with
``parse_rules`` and decided on by figway's ``Router``. Three rules files:

- realistic: one rule in ten a glob rule, the others on exact workflow ids
  (plain, percentage rollouts, tags, job_id globs, lists of ids, a workspace);
  the runs decided are a mix of workflows those rules route and of workflows
  that fall through to the default;
- globs, scope misses: glob rules only, and runs whose workflow id no rule's
  glob matches (a fall-through decided by the workflow id alone);
- globs, worst case: glob rules only, every rule's workflow and folder globs
  match the run and only its job_id glob misses, so the run falls through after
  every rule was tried, on the warm path too.

Each file is decided on three ways, interleaved round by round:

- warm: a router that has already decided for every workflow of the run mix;
- cold: every timed decision is the first for its workflow on its table. Each
  round installs a fresh table (``Router.install``, not timed) and decides for
  workflow ids that table has not seen: each distinct workflow of the
  realistic mix once per table, a new workflow id every decision on the glob
  files;
- naive: a first-match loop over the same rules with ``fnmatch.fnmatchcase``
  on every field, what a straightforward router would do: the reference.

Every call is timed on its own with ``time.perf_counter_ns``, with the garbage
collector off, after warm-up decisions that are not kept. The issue's target is
a p99 under 50 microseconds with 1,000 rules; the benchmark says which cases
meet it and asserts nothing. `make bench-routing` runs the full variant: about
two minutes on 2 cores, most of it in the naive loop, the cold cases and the
worst case (``--quick``: about 15 s, most of it parsing the three files).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from bench.report import format_load, machine, markdown_table
from bench.stats import percentile
from gateway.routing.bucketing import bucket_of, in_rollout
from gateway.routing.loading import RulesDocument, parse_rules
from gateway.routing.router import Router, RunFacts
from gateway.routing.rules import PATTERN_FIELDS

#: The issue's target: one decision with 1,000 rules, p99 under this many microseconds.
TARGET_P99_US = 50.0
TARGET_RULES = 1_000

# Full run / --quick; an explicit option wins over both.
DEFAULTS = {"rounds": 10, "samples": 100_000, "slow_samples": 10_000, "warmup": 10_000}
QUICK = {"rounds": 2, "samples": 4_000, "slow_samples": 400, "warmup": 500}

WORKSPACES = ("ws-analytics", "ws-finance", "ws-ops", "ws-marketing", "ws-platform")
FOLDERS = ("etl/daily", "etl/hourly", "reports/monthly", "ml/training", "exports")
TAGS = ("pii", "tier-1", "finance", "experimental")
REGISTERED = datetime(2026, 6, 1, tzinfo=UTC)  # runs' workflows: registered over 180 days
REGISTERED_LATELY = datetime(2026, 9, 1, tzinfo=UTC)

#: What the rule ids of the benchmark's files start with, and what they say.
RULE_KINDS = {
    "exact": "an exact-id rule",
    "glob": "a glob rule",
    "registered": "the registration-date rule",
}
#: Kinds of exact-id rule in the realistic file, with their weights.
EXACT_KINDS = {
    "plain": 35,
    "rollout": 20,
    "tagged": 15,
    "job_glob": 15,
    "id_list": 10,
    "workspace": 5,
}


# -- the rules files and the runs decided ----------------------------------------------


@dataclass
class Workload:
    """One rules file, the runs decided on it, and a source of never-seen workflows."""

    name: str
    label: str
    description: str
    text: str
    mix: list[RunFacts]  # the runs of the warm and naive cases, in order
    fresh: Callable[[int], list[RunFacts]]  # up to n runs of workflows a new table has not seen
    composition: dict[str, int] = field(default_factory=dict)


def _rules_text(rules: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(
        {"phase": 2, "default": "rq", "rules": rules}, sort_keys=False, width=1_000
    )


def _facts(
    rng: random.Random,
    workflow_id: str,
    *,
    workspace_id: str | None = None,
    folder_id: str | None = None,
    job_id: str | None = None,
    tags: Sequence[str] = (),
) -> RunFacts:
    return RunFacts(
        workflow_id=workflow_id,
        workspace_id=workspace_id or rng.choice(WORKSPACES),
        folder_id=folder_id or rng.choice(FOLDERS),
        job_id=job_id or f"job-{rng.randrange(100_000)}",
        tags=frozenset(tags),
        registered_at=REGISTERED + timedelta(days=rng.randrange(180)),
    )


def _glob_rule(index: int, g: int) -> dict[str, Any]:
    """The g-th glob rule of the realistic file, in one of four shapes."""
    rule: dict[str, Any] = {"id": f"glob-{index:04d}", "backend": "prefect"}
    shape = g % 4
    if shape == 0:
        rule["match"] = {"workflow_id": f"team{g:03d}-*"}
    elif shape == 1:
        rule["match"] = {"workflow_id": f"team{g:03d}-*", "job_id": "*-daily"}
        rule["percent"] = 50
    elif shape == 2:
        rule["match"] = {"workspace_id": f"ws-tenant{g:03d}*"}
    else:
        rule["match"] = {
            "workflow_id": [f"team{g:03d}-etl-*", f"team{g:03d}-ml-*"],
            "folder_id": "etl/*",
        }
    return rule


def _glob_run(rng: random.Random, g: int, serial: int) -> RunFacts:
    """A run that the g-th glob rule routes, or (one in four) just misses."""
    miss = rng.random() < 0.25
    shape = g % 4
    if shape == 2:
        return _facts(
            rng,
            f"tenant-wf-{serial}",
            workspace_id="ws-ops" if miss else f"ws-tenant{g:03d}-eu",
        )
    if shape == 3:
        return _facts(
            rng, f"team{g:03d}-etl-{serial}", folder_id="exports" if miss else "etl/daily"
        )
    job = f"report-{serial}-{'adhoc' if miss else 'daily'}"
    return _facts(rng, f"team{g:03d}-x{serial}", job_id=job)


def realistic(rule_count: int, seed: int) -> Workload:
    """Rules on exact workflow ids, one in ten a glob rule; runs routed, and not."""
    rng = random.Random(seed)
    rules: list[dict[str, Any]] = []
    exact: list[tuple[str, str, dict[str, Any]]] = []  # (workflow id, kind, the rule's match)
    globs: list[int] = []
    serial = itertools.count()

    def workflow() -> str:
        return f"wf-{next(serial):05d}"

    while len(rules) < rule_count:
        index = len(rules)
        if index == rule_count - 1 and rule_count >= 20:
            # The phase-2 habit: whatever was registered lately starts on the new backend.
            rules.append(
                {
                    "id": "registered-lately",
                    "match": {"registered_after": REGISTERED_LATELY},
                    "backend": "prefect",
                }
            )
            continue
        if index % 10 == 9:
            globs.append(len(globs))
            rules.append(_glob_rule(index, globs[-1]))
            continue
        kind = rng.choices(list(EXACT_KINDS), weights=list(EXACT_KINDS.values()))[0]
        rule: dict[str, Any] = {"id": f"exact-{index:04d}-{kind}", "backend": "prefect"}
        wf = workflow()
        match: dict[str, Any] = {"workflow_id": wf}
        if kind == "plain" and rng.random() < 0.25:
            rule["fallback"] = "rq"
        elif kind == "rollout":
            rule["percent"] = rng.choice((5, 10, 25, 50))
            if rng.random() < 0.3:
                rule["sticky_by"] = "workflow_id"
            if rng.random() < 0.3:
                rule["guard"] = {"max_failure_rate_increase": 0.05, "rollback_to": "rq"}
        elif kind == "tagged":
            match["tags"] = [rng.choice(TAGS)]
            rule["shadow"] = "rq"
        elif kind == "job_glob":
            match["job_id"] = rng.choice(("nightly-*", "backfill-2026-*", "*-hourly"))
        elif kind == "id_list":
            match["workflow_id"] = [wf, workflow(), workflow()]
        elif kind == "workspace":
            match["workspace_id"] = rng.choice(WORKSPACES)
        rule["match"] = match
        rules.append(rule)
        for member in [match["workflow_id"]] if kind != "id_list" else match["workflow_id"]:
            exact.append((member, kind, match))
        if kind == "job_glob" and len(rules) < rule_count and len(rules) % 10 != 9:
            # The rest of that workflow's runs: a rollout, on a second rule.
            rules.append(
                {
                    "id": f"exact-{len(rules):04d}-rest",
                    "match": {"workflow_id": wf},
                    "backend": "prefect",
                    "percent": 20,
                }
            )

    mix: list[RunFacts] = []
    composition: Counter[str] = Counter()
    runs = max(rule_count, 40)
    for _ in range(runs):
        draw = rng.random()
        if draw < 0.70 and exact:
            wf, kind, match = rng.choice(exact)
            composition["exact-id workflow"] += 1
            if kind == "tagged":
                tag = match["tags"][0]
                others = [t for t in TAGS if t != tag]
                tags = rng.sample(others, rng.randrange(2))
                if rng.random() < 0.5:
                    tags.append(tag)
                mix.append(_facts(rng, wf, tags=tags))
            elif kind == "job_glob":
                pattern = match["job_id"]
                fits = pattern.replace("*", str(rng.randrange(10_000)))
                job = fits if rng.random() < 0.5 else f"adhoc-{rng.randrange(10_000)}"
                mix.append(_facts(rng, wf, job_id=job))
            elif kind == "workspace":
                right = match["workspace_id"]
                wrong = next(w for w in WORKSPACES if w != right)
                mix.append(_facts(rng, wf, workspace_id=right if rng.random() < 0.8 else wrong))
            else:
                mix.append(_facts(rng, wf, tags=rng.sample(TAGS, rng.randrange(2))))
        elif draw < 0.85 and globs:
            composition["glob-rule workflow"] += 1
            mix.append(_glob_run(rng, rng.choice(globs), next(serial)))
        else:
            composition["unrouted workflow"] += 1
            mix.append(_facts(rng, f"unrouted-{next(serial)}"))

    distinct: dict[str, RunFacts] = {}
    for facts in mix:
        distinct.setdefault(facts.workflow_id, facts)
    cold_runs = list(distinct.values())
    rng.shuffle(cold_runs)

    position = [0]

    def fresh(n: int) -> list[RunFacts]:
        """Distinct workflows, at most one run each, taking turns so each gets its share."""
        first = position[0]
        count = min(n, len(cold_runs))
        position[0] = (first + count) % len(cold_runs)
        return [cold_runs[(first + i) % len(cold_runs)] for i in range(count)]

    globs_count = len(globs)
    dated = any(rule["id"] == "registered-lately" for rule in rules)
    exact_rules = sum(rule["id"].startswith("exact") for rule in rules)
    return Workload(
        name="realistic",
        label="realistic",
        description=(
            f"{len(rules)} rules: {exact_rules} on exact workflow ids "
            f"({len({wf for wf, _, _ in exact})} workflows; plain, percentage rollouts, tags, "
            f"job_id globs, lists of ids, a workspace), {globs_count} glob rules"
            + (", and last a rule for workflows registered after 2026-09-01" if dated else "")
            + f"; {len(mix)} runs decided, {len(cold_runs)} distinct workflows"
        ),
        text=_rules_text(rules),
        mix=mix,
        fresh=fresh,
        composition=dict(composition),
    )


def _fresh_ids(make: Callable[[str], RunFacts]) -> Callable[[int], list[RunFacts]]:
    """New workflow ids on every call: never decided on by any table before."""
    serial = itertools.count()

    def fresh(n: int) -> list[RunFacts]:
        return [make(f"{next(serial):07d}") for _ in range(n)]

    return fresh


def globs_scope_misses(rule_count: int, seed: int) -> Workload:
    """Glob rules only; no rule's workflow glob matches the runs."""
    rng = random.Random(seed)
    rules: list[dict[str, Any]] = []
    for index in range(rule_count):
        match: dict[str, Any] = {"workflow_id": f"batch{index:04d}-*"}
        if index % 3 == 1:
            match["workflow_id"] = [f"batch{index:04d}-*", f"export{index:04d}-*"]
        elif index % 3 == 2:
            match["job_id"] = f"nightly-{index:04d}-*"
        rules.append({"id": f"glob-{index:04d}", "match": match, "backend": "prefect"})

    def make(suffix: str) -> RunFacts:
        return _facts(rng, f"adhoc-{suffix}")

    return Workload(
        name="globs_scope_misses",
        label="globs, scope misses",
        description=(
            f"{rule_count} glob rules on workflow ids (`batch0042-*`, some with a second "
            "glob or a job_id glob); the runs' workflow ids match none"
        ),
        text=_rules_text(rules),
        mix=[make(f"mix{i:03d}") for i in range(64)],
        fresh=_fresh_ids(lambda suffix: make(f"cold{suffix}")),
    )


def globs_worst(rule_count: int, seed: int) -> Workload:
    """Glob rules only; each rule's scope matches the run and only its job_id glob misses."""
    rng = random.Random(seed)
    shapes = ("wf-*", "*-etl-*", "wf-??-*")
    rules: list[dict[str, Any]] = []
    for index in range(rule_count):
        job: str | list[str] = f"job-{index:04d}-*"
        if index % 2:
            job = [f"job-{index:04d}-*", f"retry-{index:04d}-*"]
        rules.append(
            {
                "id": f"glob-{index:04d}",
                "match": {
                    "workflow_id": shapes[index % len(shapes)],
                    "folder_id": "team-*/*",
                    "job_id": job,
                },
                "backend": "prefect",
            }
        )

    def make(suffix: str) -> RunFacts:
        return _facts(rng, f"wf-01-etl-{suffix}", folder_id="team-a/etl", job_id="adhoc-1")

    return Workload(
        name="globs_worst",
        label="globs, worst case",
        description=(
            f"{rule_count} glob rules whose workflow_id (`wf-*`, `*-etl-*`, `wf-??-*`) and "
            "folder_id (`team-*/*`) globs all match the runs and whose job_id globs "
            "(`job-0042-*`, some also `retry-0042-*`) all miss: every rule is a candidate "
            "and is tried, warm or cold"
        ),
        text=_rules_text(rules),
        mix=[make(f"mix{i:03d}") for i in range(64)],
        fresh=_fresh_ids(lambda suffix: make(f"cold{suffix}")),
    )


# -- the reference: a straightforward first-match loop --------------------------------------


class NaiveRouter:
    """First match over the rules in file order, ``fnmatchcase`` on every pattern.

    The rules' patterns are read once into tuples, so the loop measures matching,
    not pydantic attribute access. Guards are taken as not tripped, as in the
    benchmark's router.
    """

    def __init__(self, document: RulesDocument) -> None:
        self.default = document.rules.default
        self.enabled = document.rules.enabled
        self.rules = [
            (
                rule,
                tuple(
                    (name, patterns)
                    for name in PATTERN_FIELDS
                    if (patterns := rule.match.patterns(name)) is not None
                ),
                frozenset(rule.match.tags),
                rule.match.registered_after,
            )
            for rule in document.rules.rules
        ]

    def decide(self, facts: RunFacts) -> tuple[str, str | None]:
        """The backend and the deciding rule's id (None: the default or the pin)."""
        if facts.pinned is not None and self.enabled(facts.pinned):
            return facts.pinned, None
        for rule, fields, tags, after in self.rules:
            if not self._matches(fields, tags, after, facts):
                continue
            if rule.percent is None:
                return rule.backend, rule.id
            bucket = bucket_of(rule.bucket_salt, getattr(facts, rule.bucket_key))
            if in_rollout(bucket, rule.percent):
                return rule.backend, rule.id
            return rule.otherwise or self.default, rule.id
        return self.default, None

    @staticmethod
    def _matches(
        fields: tuple[tuple[str, tuple[str, ...]], ...],
        tags: frozenset[str],
        after: datetime | None,
        facts: RunFacts,
    ) -> bool:
        for name, patterns in fields:
            value = getattr(facts, name)
            if not any(fnmatchcase(value, pattern) for pattern in patterns):
                return False
        if not tags <= facts.tags:
            return False
        return after is None or (facts.registered_at is not None and facts.registered_at > after)


# -- timing -------------------------------------------------------------------------------


def time_calls(call: Callable[[RunFacts], object], runs: Sequence[RunFacts]) -> list[int]:
    """Nanoseconds of each ``call(run)``, the garbage collector off."""
    return time_batches([(call, runs)])


def time_batches(
    batches: Sequence[tuple[Callable[[RunFacts], object], Sequence[RunFacts]]],
) -> list[int]:
    """Nanoseconds of each call of each batch, in order; one collection before, none during."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for call, runs in batches:
            timed = [0] * len(runs)
            for index, run in enumerate(runs):
                began = clock()
                call(run)
                timed[index] = clock() - began
            samples += timed
    finally:
        gc.enable()
    return samples


def _noop(run: RunFacts) -> None:
    return None


@dataclass
class Case:
    """One row of the results: a way of deciding, on one workload."""

    name: str
    workload: str
    path: str  # warm, cold, naive, floor
    label: str
    samples: int
    measure: Callable[[int], list[int]]  # n decisions -> n samples (ns)
    collected: list[int] = field(default_factory=list)


class Bench:
    """The workloads, their routers, and the cases measured on them."""

    def __init__(self, args: argparse.Namespace, progress: Callable[[str], None]) -> None:
        self.args = args
        self.say = progress
        self.cases: list[Case] = []
        self.workloads: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self._mix_of: dict[str, list[RunFacts]] = {}
        for build in (realistic, globs_scope_misses, globs_worst):
            self._add(build(args.rules, args.seed))
        first = self.cases[0]
        floor_runs = itertools.cycle(self._mix_of[first.workload])
        self.cases.append(
            Case(
                name="timer_floor",
                workload="-",
                path="floor",
                label="timer floor: an empty call, timed the same way",
                samples=args.samples,
                measure=lambda n: time_calls(_noop, list(itertools.islice(floor_runs, n))),
            )
        )

    def _add(self, workload: Workload) -> None:
        self._mix_of[workload.name] = workload.mix
        began = time.perf_counter()
        document = parse_rules(workload.text, source=f"bench:{workload.name}")
        parse_s = time.perf_counter() - began
        began = time.perf_counter()
        router = Router(document)
        table_ms = (time.perf_counter() - began) * 1_000
        naive = NaiveRouter(document)
        installs_ms: list[float] = []
        self.workloads[workload.name] = {
            "label": workload.label,
            "description": workload.description,
            "rules": len(document.rules.rules),
            "rules_file_bytes": len(workload.text.encode()),
            "mix_runs": len(workload.mix),
            "mix_composition": workload.composition,
            "parse_rules_s": parse_s,
            "first_table_ms": table_ms,
            "installs_ms": installs_ms,
        }
        self.checks[workload.name] = self._check(router, naive, workload.mix)
        routed = self.checks[workload.name]["routed_by"]
        self.say(
            f"{workload.label}: {len(document.rules.rules)} rules parsed in {parse_s:.2f} s, "
            f"table built in {table_ms:.0f} ms; {len(workload.mix)} runs: "
            + ", ".join(f"{count} {what}" for what, count in routed.items())
        )

        warm_runs = itertools.cycle(workload.mix)
        naive_runs = itertools.cycle(workload.mix)

        def warm(n: int) -> list[int]:
            return time_calls(router.decide, list(itertools.islice(warm_runs, n)))

        def baseline(n: int) -> list[int]:
            return time_calls(naive.decide, list(itertools.islice(naive_runs, n)))

        def cold(n: int) -> list[int]:
            # Fresh tables first (not timed), then every timed decision is the first for its
            # workflow on its table; no table is built between two timed decisions.
            batches: list[tuple[Callable[[RunFacts], object], list[RunFacts]]] = []
            wanted = n
            while wanted > 0:
                runs = workload.fresh(wanted)
                began = time.perf_counter()
                fresh_router = Router(document)
                installs_ms.append((time.perf_counter() - began) * 1_000)
                batches.append((fresh_router.decide, runs))
                wanted -= len(runs)
            return time_batches(batches)

        slow = self.args.slow_samples
        fast = self.args.samples
        name = workload.name
        self.cases += [
            Case(f"{name}_warm", name, "warm", f"{workload.label}: router, warm", fast, warm),
            Case(f"{name}_cold", name, "cold", f"{workload.label}: router, cold", slow, cold),
            Case(
                f"{name}_naive",
                name,
                "naive",
                f"{workload.label}: naive fnmatch loop",
                slow,
                baseline,
            ),
        ]

    @staticmethod
    def _check(router: Router, naive: NaiveRouter, mix: list[RunFacts]) -> dict[str, Any]:
        """Whether the naive loop decides as the router does, and what decided the mix."""
        routed_by: Counter[str] = Counter()
        disagreements = []
        for facts in mix:
            decision = router.decide(facts)
            if decision.rule_id is None:
                routed_by["fell through to the default"] += 1
            else:
                kind = decision.rule_id.split("-")[0]
                routed_by[f"routed by {RULE_KINDS.get(kind, 'another rule')}"] += 1
            mine = naive.decide(facts)
            if mine != (decision.backend, decision.rule_id):
                disagreements.append(
                    f"{facts.workflow_id} / {facts.job_id}: router {decision.backend} "
                    f"({decision.rule_id}), naive {mine[0]} ({mine[1]})"
                )
        return {
            "routed_by": dict(sorted(routed_by.items())),
            "naive_disagrees": len(disagreements),
            "disagreements": disagreements[:10],
        }

    def run(self) -> None:
        args = self.args
        counts = {case.path: self._warmup(case) for case in self.cases}
        self.say(
            f"warm-up, not kept: {counts['warm']} decisions per warm case, "
            f"{counts['cold']} per cold or naive case"
        )
        for case in self.cases:
            case.measure(self._warmup(case))
        for round_index in range(args.rounds):
            began = time.perf_counter()
            for case in self.cases:
                share = case.samples // args.rounds + (
                    1 if round_index < case.samples % args.rounds else 0
                )
                if share:
                    case.collected += case.measure(share)
            self.say(f"round {round_index + 1}/{args.rounds}: {time.perf_counter() - began:.1f} s")

    def _warmup(self, case: Case) -> int:
        if case.path in ("warm", "floor"):
            mix = self._mix_of.get(case.workload, [])
            return max(int(self.args.warmup), 2 * len(mix))
        return max(1, int(self.args.slow_samples) // 20)


# -- results ------------------------------------------------------------------------------


def summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """Count, mean and percentiles of nanosecond samples, in microseconds.

    >>> summary_us([1_000, 2_000, 3_000])["p50"]
    2.0
    """
    values = sorted(ns / 1_000 for ns in samples_ns)
    return {
        "count": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "p99_9": percentile(values, 99.9),
        "minimum": values[0],
        "maximum": values[-1],
    }


def meets(p99_us: float) -> str:
    """The target's verdict on a p99.

    >>> meets(12.5), meets(50.0)
    ('met', 'MISSED')
    """
    return "met" if p99_us < TARGET_P99_US else "MISSED"


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "rules": args.rules,
            "rounds": args.rounds,
            "samples": args.samples,
            "slow_samples": args.slow_samples,
            "warmup": args.warmup,
            "seed": args.seed,
            "quick": args.quick,
        },
        "environment": machine(),
        "target_p99_us": TARGET_P99_US,
    }
    began = time.perf_counter()
    bench = Bench(args, say)
    bench.run()
    cases = []
    for case in bench.cases:
        summary = summary_us(case.collected)
        cases.append(
            {
                "name": case.name,
                "workload": case.workload,
                "path": case.path,
                "label": case.label,
                "summary_us": summary,
                "target": meets(summary["p99"]),
            }
        )
        say(
            f"  {case.label:<46} p50 {summary['p50']:8.2f} µs  p95 {summary['p95']:8.2f} µs  "
            f"p99 {summary['p99']:8.2f} µs"
        )
    for workload in bench.workloads.values():
        installs = workload.pop("installs_ms")
        workload["fresh_tables"] = len(installs)
        workload["table_build_ms_p50"] = percentile(installs, 50) if installs else None
    results["workloads"] = bench.workloads
    results["checks"] = bench.checks
    results["cases"] = cases
    results["elapsed_seconds"] = time.perf_counter() - began
    results["environment"]["load_average_at_end"] = os.getloadavg()
    say(f"done in {results['elapsed_seconds']:.0f} s")
    return results


def render_markdown(results: dict[str, Any]) -> str:
    """The run's table of decision latencies, the setup costs and the target's verdicts."""
    env = results["environment"]
    settings = results["settings"]
    parts = [
        f"Run {results['started_at']} on {env['cpus']} CPUs ({env['cpu']}), Python {env['python']}; "
        f"figway {env['figway_commit']}. Load average (1/5/15 min) at start "
        f"{format_load(env.get('load_average_at_start'))}, at end "
        f"{format_load(env.get('load_average_at_end'))}. {settings['rounds']} rounds, the cases "
        f"interleaved in each; {settings['samples']:,} warm decisions per warm case, "
        f"{settings['slow_samples']:,} per cold and naive case; seed {settings['seed']}."
    ]
    files = [f"- {w['label']}: {w['description']}." for w in results["workloads"].values()]
    parts.append("Rules files:\n\n" + "\n".join(files))

    by_name = {case["name"]: case for case in results["cases"]}
    parts.append(f"### One routing decision ({settings['rules']:,} rules; microseconds per call)")
    rows = []
    for case in results["cases"]:
        s = case["summary_us"]
        naive = by_name.get(f"{case['workload']}_naive")
        speedup = (
            f"{naive['summary_us']['p50'] / s['p50']:.0f}x"
            if naive and case["path"] in ("warm", "cold") and s["p50"] > 0
            else ""
        )
        verdict = case["target"] if case["path"] != "floor" else ""
        rows.append(
            [
                case["label"],
                f"{s['count']:,}",
                f"{s['p50']:.2f}",
                f"{s['p95']:.2f}",
                f"{s['p99']:.2f}",
                f"{s['mean']:.2f}",
                f"{s['maximum']:.0f}",
                speedup,
                verdict,
            ]
        )
    parts.append(
        markdown_table(
            [
                "case",
                "decisions",
                "p50 µs",
                "p95 µs",
                "p99 µs",
                "mean µs",
                "max µs",
                "naive p50 / p50",
                f"p99 < {TARGET_P99_US:g} µs",
            ],
            rows,
        )
    )

    lines = []
    for name, workload in results["workloads"].items():
        check = results["checks"][name]
        agreement = (
            "the naive loop decides every run as the router does"
            if not check["naive_disagrees"]
            else f"the naive loop DISAGREES with the router on {check['naive_disagrees']} runs"
        )
        lines.append(
            f"- {workload['label']}: `parse_rules` {workload['parse_rules_s']:.2f} s, a "
            f"`RoutingTable` {workload['table_build_ms_p50']:.0f} ms (p50 of "
            f"{workload['fresh_tables']} built for the cold case); runs: "
            + ", ".join(f"{count} {what}" for what, count in check["routed_by"].items())
            + f"; {agreement}."
        )
    parts.append("Setup, not timed above, and checks:\n\n" + "\n".join(lines))

    verdicts = [
        f"- {case['label']}: p99 {case['summary_us']['p99']:.2f} µs, {case['target']}"
        for case in results["cases"]
        if case["path"] != "floor"
    ]
    note = "" if settings["rules"] == TARGET_RULES else f" (this run has {settings['rules']:,})"
    parts.append(
        f"### Target: p99 under {TARGET_P99_US:g} µs with {TARGET_RULES:,} rules{note}\n\n"
        + "\n".join(verdicts)
    )
    return "\n\n".join(parts) + "\n"


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.routing",
        description=__doc__,
        epilog="Needs no service; `make bench-routing` runs the full variant. Results: progress "
        "and a Markdown summary on stdout, the figures as JSON with --json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rules",
        type=int,
        default=TARGET_RULES,
        help="rules per file (default: %(default)s, the target's)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds the cases are interleaved in (full: 10)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="timed decisions per warm case and for the timer floor (full: 100000)",
    )
    parser.add_argument(
        "--slow-samples",
        type=int,
        default=None,
        help="timed decisions per cold and naive case (full: 10000)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warm-up decisions per warm case, at least twice its runs (full: 10000)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the rules and runs (default: %(default)s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast smoke run: 2 rounds, 4000 warm and 400 cold or naive decisions",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.rules, args.rounds, args.samples, args.slow_samples) < 1 or args.warmup < 0:
        parser.error("--rules, --rounds, --samples and --slow-samples must be at least 1")
    args.samples = max(args.samples, args.rounds)
    args.slow_samples = max(args.slow_samples, args.rounds)
    return args


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    markdown = render_markdown(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results, "markdown": markdown}, indent=2) + "\n")
    print()
    print(markdown)
    if args.json is not None:
        say(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
