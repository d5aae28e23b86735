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

from gateway.routing.router import RoutingTable, RunFacts
from gateway.routing.rules import Rule

__all__ = ["RuleChanges", "WorkflowMoves", "diff_rules", "rule_changes"]

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


def diff_rules(
    old: RoutingTable,
    new: RoutingTable,
    workflows: Sequence[RunFacts],
    job_ids: Mapping[str, Sequence[str]],
    tripped: Mapping[str, str] | None = None,
) -> list[WorkflowMoves]:
    """Per workflow (``workflows`` with any job id), how many of its jobs change backend."""
    tripped = tripped or {}
    results: list[WorkflowMoves] = []
    for facts in workflows:
        known = job_ids.get(facts.workflow_id) or ()
        jobs = list(known) or [f"job-{i}" for i in range(SYNTHETIC_JOBS)]
        moves: Counter[str] = Counter()
        for job_id in jobs:
            run = dataclasses.replace(facts, job_id=job_id)
            before = old.decide(run, tripped).backend
            after = new.decide(run, tripped).backend
            if before != after:
                moves[f"{before} -> {after}"] += 1
        results.append(WorkflowMoves(facts.workflow_id, len(jobs), dict(moves), not known))
    return results
