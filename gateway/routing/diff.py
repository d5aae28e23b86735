"""What a rules change would move, before it is made: ``figway rules diff OLD NEW``.

For each registered workflow, both versions decide for the same job ids and
the moves are counted. The job ids are the workflow's recent ones from the
database; a workflow with no runs yet is measured on synthetic ids, which
estimates the share a percentage rollout moves.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.routing.rollout import RolloutPosition, reconcile, start_position
from gateway.routing.router import RoutingTable, RunFacts
from gateway.routing.rules import Rule

__all__ = [
    "RuleChanges",
    "WorkflowMoves",
    "diff_rules",
    "reconciled_positions",
    "rollout_changes",
    "rule_changes",
]

SYNTHETIC_JOBS = 10_000


@dataclass(frozen=True)
class WorkflowMoves:
    workflow_id: str
    jobs: int
    moves: dict[str, int]  # "rq -> prefect": how many of the jobs
    synthetic: bool  # measured on made-up job ids (the workflow has no runs yet)

    @property
    def moved(self) -> int:
        return sum(self.moves.values())

    @property
    def share(self) -> float:
        return self.moved / self.jobs if self.jobs else 0.0


@dataclass(frozen=True)
class RuleChanges:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict[str, tuple[str, ...]]  # rule id -> the keys that differ
    reordered: bool
    phase: tuple[int, int] | None = None  # (old, new) when the phase changes


def rule_changes(old: RoutingTable, new: RoutingTable) -> RuleChanges:
    before = {rule.id: rule for rule in old.rules.rules}
    after = {rule.id: rule for rule in new.rules.rules}
    kept_before = [rule_id for rule_id in before if rule_id in after]
    kept_after = [rule_id for rule_id in after if rule_id in before]
    return RuleChanges(
        added=tuple(rule_id for rule_id in after if rule_id not in before),
        removed=tuple(rule_id for rule_id in before if rule_id not in after),
        changed={
            r: _changed_keys(before[r], after[r]) for r in kept_after if before[r] != after[r]
        },
        reordered=kept_before != kept_after,
        phase=None if old.rules.phase == new.rules.phase else (old.rules.phase, new.rules.phase),
    )


def _changed_keys(before: Rule, after: Rule) -> tuple[str, ...]:
    old, new = before.model_dump(), after.model_dump()
    return tuple(key for key in new if old.get(key) != new[key])


def _steps(steps: Sequence[float]) -> str:
    return "[" + ", ".join(f"{s:g}" for s in steps) + "]"


def rollout_changes(
    old: RoutingTable, new: RoutingTable, stored: Mapping[str, RolloutPosition]
) -> list[tuple[str, str]]:
    """How the new file's steps would reconcile each rollout in force, one sentence a rule.

    ``stored`` holds the positions in the database (a rule without one is at its
    first step). Only rules whose steps appear, change or go are listed.
    """
    before = {rule.id: rule for rule in old.rules.rules}
    after = {rule.id: rule for rule in new.rules.rules}
    said: list[tuple[str, str]] = []
    for rule_id, rule in after.items():
        if rule.steps is None:
            continue
        previous = before.get(rule_id)
        old_steps = None if previous is None else previous.steps
        if old_steps is not None and list(old_steps) == list(rule.steps):
            continue
        position = stored.get(rule_id)
        if position is None and old_steps is not None:
            position = start_position(old_steps)
        if position is None:
            first = start_position(rule.steps)
            said.append((rule_id, f"new steps {_steps(rule.steps)}: starts at {first.describe()}"))
            continue
        change = reconcile(position, rule.steps)
        said.append(
            (
                rule_id,
                f"steps {_steps(position.steps)} -> {_steps(rule.steps)}, now at "
                f"{position.describe()}: {change.text}",
            )
        )
    for rule_id, rule in before.items():
        if rule.steps is not None and (rule_id not in after or after[rule_id].steps is None):
            where = stored.get(rule_id) or start_position(rule.steps)
            said.append(
                (
                    rule_id,
                    f"steps removed (it was at {where.describe()}): the rule routes as the new "
                    "file writes it; its rollout record stays, and is reconciled if steps "
                    "come back",
                )
            )
    return said


def reconciled_positions(
    new: RoutingTable, stored: Mapping[str, RolloutPosition]
) -> dict[str, RolloutPosition]:
    """The positions the new file's stepped rules would have once reconciled."""
    positions = {}
    for rule in new.rules.rules:
        if rule.steps is None:
            continue
        position = stored.get(rule.id)
        positions[rule.id] = (
            start_position(rule.steps)
            if position is None
            else reconcile(position, rule.steps).after
        )
    return positions


def diff_rules(
    old: RoutingTable,
    new: RoutingTable,
    workflows: Sequence[RunFacts],
    job_ids: Mapping[str, Sequence[str]],
    tripped: Mapping[str, str] | None = None,
    rollouts: Mapping[str, RolloutPosition] | None = None,
) -> list[WorkflowMoves]:
    """Per workflow (``workflows`` with any job id), how many of its jobs change backend.

    ``rollouts`` are the positions in force: the old file decides with them, the new
    one with them reconciled to its steps.
    """
    tripped = tripped or {}
    stored = rollouts or {}
    reconciled = reconciled_positions(new, stored)
    results: list[WorkflowMoves] = []
    for facts in workflows:
        known = job_ids.get(facts.workflow_id) or ()
        jobs = list(known) or [f"job-{i}" for i in range(SYNTHETIC_JOBS)]
        moves: Counter[str] = Counter()
        for job_id in jobs:
            run = dataclasses.replace(facts, job_id=job_id)
            before = old.decide(run, tripped, stored).backend
            after = new.decide(run, tripped, reconciled).backend
            if before != after:
                moves[f"{before} -> {after}"] += 1
        results.append(WorkflowMoves(facts.workflow_id, len(jobs), dict(moves), not known))
    return results
