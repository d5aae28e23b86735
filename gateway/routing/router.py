"""Deciding, run by run, which backend a run goes to, and saying why.

A :class:`RoutingTable` is one checked rules file, compiled: glob patterns
become one regular expression per field, and rules that name exact workflow
ids are indexed by them. The rules that can apply to a workflow (everything
but the job id) are worked out once per workflow and cached, so a decision
costs a dictionary lookup, a glob on the job id at most, and a hash when the
rule splits by percentage. The :class:`Router` swaps tables in one assignment,
so a reload never pauses a request and a request never sees half a file.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from backends.model.backend_names import LEGACY_BACKEND
from backends.model.workflow import WorkflowDefinition
from gateway.routing.bucketing import bucket_of, in_rollout
from gateway.routing.loading import RulesDocument
from gateway.routing.rollout import RolloutPosition, start_position
from gateway.routing.rules import PATTERN_FIELDS, Rule, is_literal

__all__ = ["Decision", "DecisionKind", "Explanation", "Router", "RoutingTable", "RunFacts"]

DecisionKind = Literal["pinned", "default", "rule", "rollout", "rollout_rest", "guard"]

_NO_ROLLOUTS: Mapping[str, RolloutPosition] = {}

#: Workflows whose candidate rules are remembered per table; past this the memory starts over.
_CANDIDATE_CACHE_SIZE = 50_000


@dataclass(frozen=True)
class RunFacts:
    """What routing may look at: the run's ids and its workflow's tags, age and pin."""

    workflow_id: str
    workspace_id: str
    folder_id: str
    job_id: str
    tags: frozenset[str] = frozenset()
    registered_at: datetime | None = None  # None: the workflow is not registered
    pinned: str | None = None  # the backend the workflow's definition insists on

    @classmethod
    def of_definition(
        cls, definition: WorkflowDefinition, *, job_id: str, registered_at: datetime | None
    ) -> RunFacts:
        """The facts of a run of a workflow, from its validated definition."""
        return cls(
            workflow_id=definition.workflow_id,
            workspace_id=definition.workspace_id,
            folder_id=definition.folder_id,
            job_id=job_id,
            tags=frozenset(definition.tags),
            registered_at=registered_at,
            pinned=definition.backend,
        )


@dataclass(frozen=True)
class Decision:
    backend: str
    rule_id: str | None  # None: the file's default or the definition's pin
    version: str
    reason: str
    shadow: str | None = None
    fallback: str | None = None
    #: Why, in one word (a bounded metric label): pinned (by the definition), default (no
    #: rule matched), rule, rollout (inside a percentage), rollout_rest (outside it), guard.
    kind: DecisionKind = "rule"

    @property
    def pinned(self) -> bool:
        return self.kind == "pinned"


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    #: Why each rule before the deciding one did not apply, in file order.
    passed_over: tuple[str, ...] = field(default=())


class _FieldMatcher:
    """Any of a field's patterns: exact names by set lookup, globs by one regex."""

    __slots__ = ("literals", "regex", "text")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.literals = frozenset(p for p in patterns if is_literal(p))
        globs = [p for p in patterns if not is_literal(p)]
        self.regex = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None
        )
        self.text = ", ".join(repr(p) for p in patterns)

    def matches(self, value: str) -> bool:
        return value in self.literals or (
            self.regex is not None and self.regex.match(value) is not None
        )


class _CompiledRule:
    __slots__ = ("index", "job", "line", "rule", "scope", "tags")

    def __init__(self, rule: Rule, index: int, line: int) -> None:
        self.rule = rule
        self.index = index
        self.line = line
        match = rule.match
        self.scope = tuple(
            (name, _FieldMatcher(patterns))
            for name in PATTERN_FIELDS
            if name != "job_id" and (patterns := match.patterns(name)) is not None
        )
        job_patterns = match.patterns("job_id")
        self.job = None if job_patterns is None else _FieldMatcher(job_patterns)
        self.tags = frozenset(match.tags)

    def in_scope(self, facts: RunFacts) -> bool:
        """Whether the rule can apply to this workflow, job id aside (the fast yes or no)."""
        for name, matcher in self.scope:
            if not matcher.matches(getattr(facts, name)):
                return False
        if not self.tags <= facts.tags:
            return False
        after = self.rule.match.registered_after
        return after is None or (facts.registered_at is not None and facts.registered_at > after)

    def scope_mismatch(self, facts: RunFacts) -> str | None:
        """Why the rule cannot apply to this workflow (None when it can), job id aside."""
        for name, matcher in self.scope:
            value: str = getattr(facts, name)
            if not matcher.matches(value):
                return f"{name} {value!r} does not match {matcher.text}"
        if not self.tags <= facts.tags:
            missing = ", ".join(sorted(self.tags - facts.tags))
            return f"the workflow lacks tag(s) {missing}"
        after = self.rule.match.registered_after
        if after is not None:
            if facts.registered_at is None:
                return "the workflow is not registered, so it has no registration time"
            if facts.registered_at <= after:
                return (
                    f"the workflow was registered {facts.registered_at:%Y-%m-%d %H:%M} UTC, "
                    f"not after {after:%Y-%m-%d %H:%M} UTC"
                )
        return None

    def job_mismatch(self, job_id: str) -> str | None:
        if self.job is None or self.job.matches(job_id):
            return None
        return f"job_id {job_id!r} does not match {self.job.text}"


class _Candidates:
    """The rules that can apply to one workflow, in file order, with a quick job id test.

    ``any_job`` matches a job id that some job-constrained candidate accepts; when
    it does not match, the first candidate with no job constraint decides at once,
    however many job globs come before it.
    """

    __slots__ = ("any_job", "first_unconstrained", "rules")

    def __init__(self, rules: tuple[_CompiledRule, ...]) -> None:
        self.rules = rules
        self.first_unconstrained = next((r for r in rules if r.job is None), None)
        patterns = [
            p for r in rules if r.job is not None for p in r.rule.match.patterns("job_id") or ()
        ]
        self.any_job = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
            if patterns
            else None
        )

    def first_for(self, job_id: str) -> _CompiledRule | None:
        if self.any_job is None or self.any_job.match(job_id) is None:
            return self.first_unconstrained
        for compiled in self.rules:
            if compiled.job is None or compiled.job.matches(job_id):
                return compiled
        return None


class RoutingTable:
    """One rules file, compiled for fast decisions."""

    def __init__(self, document: RulesDocument) -> None:
        self.document = document
        self.version = document.version
        self.rules = document.rules
        self.default = document.rules.default
        self._compiled = [
            _CompiledRule(rule, index, line)
            for index, (rule, line) in enumerate(
                zip(document.rules.rules, document.rule_lines, strict=True)
            )
        ]
        self._by_workflow: dict[str, list[_CompiledRule]] = {}
        self._unindexed: list[_CompiledRule] = []
        for compiled in self._compiled:
            workflows = compiled.rule.match.patterns("workflow_id")
            if workflows is not None and all(is_literal(w) for w in workflows):
                for workflow_id in workflows:
                    self._by_workflow.setdefault(workflow_id, []).append(compiled)
            else:
                self._unindexed.append(compiled)
        self._candidates: dict[tuple[object, ...], _Candidates] = {}
        # Many workflows share one candidate list (the glob rules): compile its job test once.
        self._candidate_lists: dict[tuple[int, ...], _Candidates] = {}

    def decide(
        self,
        facts: RunFacts,
        tripped: Mapping[str, str],
        rollouts: Mapping[str, RolloutPosition] = _NO_ROLLOUTS,
    ) -> Decision:
        pinned = self._pinned(facts)
        if pinned is not None:
            return pinned
        compiled = self._candidates_for(facts).first_for(facts.job_id)
        if compiled is None:
            return self._default_decision()
        return self._apply(compiled.rule, facts, tripped, rollouts)

    def rollback_backend(self, rule: Rule) -> str:
        """Where a rule's runs go while it is rolled back: its guard's ``rollback_to``,
        else the other side of its split."""
        if rule.guard is not None:
            return rule.guard.rollback_to
        return rule.otherwise or self.default

    def position(
        self, rule: Rule, rollouts: Mapping[str, RolloutPosition]
    ) -> RolloutPosition | None:
        """A stepped rule's position: the one in force, else its first step."""
        if rule.steps is None:
            return None
        return rollouts.get(rule.id) or start_position(rule.steps)

    def explain(
        self,
        facts: RunFacts,
        tripped: Mapping[str, str],
        rollouts: Mapping[str, RolloutPosition] = _NO_ROLLOUTS,
    ) -> Explanation:
        """The decision, with why each earlier rule did not apply (slow: for people)."""
        pinned = self._pinned(facts)
        if pinned is not None:
            return Explanation(pinned)
        passed_over: list[str] = []
        for compiled in self._compiled:
            why = compiled.scope_mismatch(facts) or compiled.job_mismatch(facts.job_id)
            if why is None:
                decision = self._apply(compiled.rule, facts, tripped, rollouts)
                return Explanation(decision, tuple(passed_over))
            passed_over.append(f"rule {compiled.rule.id!r} (line {compiled.line}): {why}")
        return Explanation(self._default_decision(), tuple(passed_over))

    def _pinned(self, facts: RunFacts) -> Decision | None:
        # A pin to a switched-off backend, or to RQ in phase 3, yields to the rules.
        if (
            facts.pinned is None
            or not self.rules.enabled(facts.pinned)
            or (self.rules.phase == 3 and facts.pinned == LEGACY_BACKEND)
        ):
            return None
        return Decision(
            backend=facts.pinned,
            rule_id=None,
            version=self.version,
            reason=f"pinned by the workflow definition (backend: {facts.pinned})",
            kind="pinned",
        )

    def _default_decision(self) -> Decision:
        return Decision(
            backend=self.default,
            rule_id=None,
            version=self.version,
            reason=f"no rule matched: the default, {self.default}",
            kind="default",
        )

    def _candidates_for(self, facts: RunFacts) -> _Candidates:
        key = (
            facts.workflow_id,
            facts.workspace_id,
            facts.folder_id,
            facts.tags,
            facts.registered_at,
        )
        candidates = self._candidates.get(key)
        if candidates is None:
            indexed = self._by_workflow.get(facts.workflow_id)
            # Both lists are in file order already: merge them only when both have rules.
            merged: Iterable[_CompiledRule] = (
                heapq.merge(indexed, self._unindexed, key=lambda c: c.index)
                if indexed
                else self._unindexed
            )
            rules = tuple(c for c in merged if c.in_scope(facts))
            shape = tuple(c.index for c in rules)
            candidates = self._candidate_lists.get(shape) or _Candidates(rules)
            if len(self._candidates) >= _CANDIDATE_CACHE_SIZE:
                self._candidates.clear()
                self._candidate_lists.clear()
            self._candidate_lists[shape] = candidates
            self._candidates[key] = candidates
        return candidates

    def _apply(
        self,
        rule: Rule,
        facts: RunFacts,
        tripped: Mapping[str, str],
        rollouts: Mapping[str, RolloutPosition],
    ) -> Decision:
        guarded = rule.guard is not None or rule.steps is not None
        trip = tripped.get(rule.id) if guarded else None
        kind: DecisionKind = "rule"
        if trip is not None:
            kind = "guard"
            backend = self.rollback_backend(rule)
            reason = f"rule {rule.id!r}: its guard tripped ({trip}); rolled back to {backend}"
        elif rule.split:
            position = self.position(rule, rollouts)
            percent = position.percent if position is not None else rule.percent
            assert percent is not None  # a split has one or the other
            key = rule.bucket_key
            bucket = bucket_of(rule.bucket_salt, getattr(facts, key))
            if in_rollout(bucket, percent):
                backend, side, kind = rule.backend, "inside", "rollout"
            else:
                backend, side, kind = rule.otherwise or self.default, "outside", "rollout_rest"
            share = (
                f"{percent:g}% rollout" if position is None else f"rollout at {position.describe()}"
            )
            reason = f"rule {rule.id!r}: {key} bucket {bucket / 100:.2f} is {side} the {share}: {backend}"
        else:
            backend = rule.backend
            reason = f"rule {rule.id!r}: {backend}"
        return Decision(
            backend=backend,
            rule_id=rule.id,
            version=self.version,
            reason=reason,
            shadow=rule.shadow if rule.shadow != backend else None,
            fallback=rule.fallback if rule.fallback != backend else None,
            kind=kind,
        )


class Router:
    """The rules in force, swapped whole on reload; the guards that have tripped; and where
    each rollout in steps stands."""

    def __init__(self, document: RulesDocument) -> None:
        self._table = RoutingTable(document)
        self._tripped: Mapping[str, str] = {}
        self._rollouts: Mapping[str, RolloutPosition] = {}

    @property
    def table(self) -> RoutingTable:
        return self._table

    @property
    def tripped(self) -> Mapping[str, str]:
        return self._tripped

    def install(self, document: RulesDocument) -> RoutingTable:
        table = RoutingTable(document)
        self._table = table  # one assignment: requests see the old table or the new one
        return table

    def set_tripped(self, tripped: Mapping[str, str]) -> None:
        """Rule ids whose guard is in force, each with a short account of why."""
        self._tripped = dict(tripped)

    @property
    def rollouts(self) -> Mapping[str, RolloutPosition]:
        return self._rollouts

    def set_rollouts(self, rollouts: Mapping[str, RolloutPosition]) -> None:
        """The positions in force of the rules that roll out in steps, by rule id."""
        self._rollouts = dict(rollouts)

    def decide(self, facts: RunFacts) -> Decision:
        return self._table.decide(facts, self._tripped, self._rollouts)

    def explain(self, facts: RunFacts) -> Explanation:
        return self._table.explain(facts, self._tripped, self._rollouts)
