"""Automatic promotion: a rule's rollout advances a step when the judge says "not worse".

Each round, for every rule of the file with ``steps``:

- the stored position is reconciled with the file (a new rule starts at its first
  step; changed steps are reconciled as ``rollout.py`` says);
- a running rollout whose rule is not rolled back is judged on the runs accepted
  since its step began (or since the last guard reset, if later), on the figures and
  margins of its ``promote`` block (or its guard's, without one);
- **not worse**: it advances to the next step, recorded with the judgement;
- **inconclusive**: it holds (nothing is recorded: that is the normal state);
- **worse**: the rule is rolled back, as a guard trip (in force until a person
  resets it, on every gateway), and the event is recorded beside the rollout.

``min_runs`` a side is a floor: with fewer runs the judge answers inconclusive and
nothing moves. A person may pause, resume or pin a rollout; each action is
recorded with who did it. Every gateway runs the same rounds on the same rows;
moves are conditional on the revision read, so one gateway makes each move.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backends.model.errors import NotFoundError, RolloutConflictError
from backends.store import utcnow
from backends.store.rollout_records import RolloutMove, RolloutRecords, RolloutRow
from backends.store.routing_records import RoutingRecords
from gateway.reports.evidence import Evidence, Plan, policy_of, rule_evidence
from gateway.reports.judge import Answer, Judgement
from gateway.routing.rollout import (
    RolloutPosition,
    RolloutState,
    advanced,
    reconcile,
    start_position,
)
from gateway.routing.router import Router
from gateway.routing.rules import Rule

__all__ = ["GATEWAY", "RolloutKeeper", "RolloutStatus", "position_of"]

log = logging.getLogger(__name__)

#: Who moves a rollout on evidence (people's moves name their key or ``--by``).
GATEWAY = "gateway"


def position_of(row: RolloutRow) -> RolloutPosition:
    return RolloutPosition(row.percent, row.steps, RolloutState(row.state))


@dataclass(frozen=True)
class RolloutStatus:
    """A stepped rule now: its position, the evidence at this step, what it still needs."""

    rule: Rule
    position: RolloutPosition
    row: RolloutRow | None
    judgement: Judgement | None  # None: no promote policy (or not judged: paused, pinned)
    evidence: Evidence | None
    plan: Plan | None
    rolled_back: bool

    def as_dict(self) -> dict[str, Any]:
        judged: dict[str, Any] | None = None
        if self.judgement is not None and self.evidence is not None:
            judged = {
                **self.judgement.as_dict(
                    candidate=self.evidence.candidate, baseline=self.evidence.baseline
                ),
                **self.evidence.as_dict(),
            }
        return {
            "rule_id": self.rule.id,
            "position": self.position.as_dict(),
            "rolled_back": self.rolled_back,
            "step_started_at": None if self.row is None else self.row.step_started_at.isoformat(),
            "judgement": judged,
            "plan": None if self.plan is None else self.plan.as_dict(),
        }


class RolloutKeeper:
    """Keeps every rollout in steps in step with the file, the evidence and the people."""

    def __init__(self, router: Router, routing: RoutingRecords, rollouts: RolloutRecords) -> None:
        self.router = router
        self.routing = routing
        self.records = rollouts

    def _stepped(self) -> list[Rule]:
        return [rule for rule in self.router.table.rules.rules if rule.steps is not None]

    def _start(self, rule: Rule) -> None:
        assert rule.steps is not None
        start = start_position(rule.steps)
        self.records.start(
            rule_id=rule.id,
            steps=start.steps,
            percent=start.percent,
            state=start.state.value,
            by=GATEWAY,
        )

    def sync(self) -> dict[str, RolloutPosition]:
        """Reconcile the stored rollouts with the file in force and hand them to the router."""
        rows = self.records.rollouts()
        for rule in self._stepped():
            assert rule.steps is not None
            row = rows.get(rule.id)
            if row is None:
                self._start(rule)
                continue
            change = reconcile(position_of(row), rule.steps)
            if not change.changed:
                continue
            after = change.after
            moved = self._record(
                row,
                action="reconciled",
                by=GATEWAY,
                reason=f"the rules file changed the steps to {_listing(after.steps)}: "
                + change.text,
                after=after,
                restart=change.restart_evidence,
            )
            if moved:
                log.warning("rollout of rule %r reconciled with the file: %s", rule.id, change.text)
        return self.refresh()

    def _record(
        self,
        row: RolloutRow,
        *,
        action: str,
        by: str,
        reason: str,
        after: RolloutPosition,
        restart: bool,
        evidence: dict[str, Any] | None = None,
    ) -> bool:
        """Move ``row``'s rollout to ``after`` if no gateway moved it since it was read."""
        return self.records.move(
            rule_id=row.rule_id,
            revision=row.revision,
            move=RolloutMove(
                action=action,
                by=by,
                reason=reason,
                percent=after.percent,
                steps=after.steps,
                state=after.state.value,
                restart_evidence=restart,
                evidence=evidence,
            ),
        )

    def refresh(self) -> dict[str, RolloutPosition]:
        """Load the stored positions of the rules in force into the router (any gateway may
        have moved one)."""
        stepped = {rule.id for rule in self._stepped()}
        # A rule taken out of the file keeps its row (it is reconciled if it comes back).
        positions = {
            rule_id: position_of(row)
            for rule_id, row in self.records.rollouts().items()
            if rule_id in stepped
        }
        self.router.set_rollouts(positions)
        return positions

    def _since(self, rule: Rule, row: RolloutRow) -> datetime:
        since = row.step_started_at
        last_reset = self.routing.last_reset(rule_id=rule.id)
        return last_reset if last_reset is not None and last_reset > since else since

    def _judge(self, rule: Rule, row: RolloutRow, now: datetime) -> tuple[Judgement, Evidence]:
        judged = rule.judged
        assert judged is not None
        evidence = rule_evidence(
            self.routing,
            rule_id=rule.id,
            candidate=rule.backend,
            baseline=self.router.table.rollback_backend(rule),
            since=self._since(rule, row),
            until=now,
            accepted_since=True,  # runs routed at this step, not before it
        )
        policy = policy_of(judged, time_ratio=judged.max_ratio)
        return evidence.judge(watch=judged.watched, policy=policy), evidence

    def check(self, *, now: datetime | None = None) -> list[str]:
        """One round: reconcile, then judge every running rollout; returns the rules moved."""
        now = now or utcnow()
        self.sync()
        rows = self.records.rollouts()
        moved: list[str] = []
        for rule in self._stepped():
            row = rows.get(rule.id)
            if row is None or row.state != RolloutState.RUNNING.value:
                continue
            if rule.judged is None or rule.id in self.router.tripped:
                continue
            judgement, evidence = self._judge(rule, row, now)
            if judgement.answer is Answer.NOT_WORSE:
                acted = self._advance(rule, row, judgement, evidence)
            elif judgement.answer is Answer.WORSE:
                acted = self._roll_back(rule, row, judgement, evidence)
            else:
                acted = False  # inconclusive: hold, and say nothing (the normal state)
            if acted:
                moved.append(rule.id)
        self.refresh()
        return moved

    def _advance(
        self, rule: Rule, row: RolloutRow, judgement: Judgement, evidence: Evidence
    ) -> bool:
        before = position_of(row)
        after = advanced(before)
        sentence = judgement.sentence(candidate=evidence.candidate, baseline=evidence.baseline)
        reason = f"at {before.describe()}: {sentence} Advanced to {after.describe()}."
        done = self._record(
            row,
            action="advanced",
            by=GATEWAY,
            reason=reason,
            after=after,
            restart=True,
            evidence=_evidence(judgement, evidence),
        )
        if done:
            log.warning("rollout of rule %r advanced: %s", rule.id, reason)
        return done

    def _roll_back(
        self, rule: Rule, row: RolloutRow, judgement: Judgement, evidence: Evidence
    ) -> bool:
        position = position_of(row)
        sentence = judgement.sentence(candidate=evidence.candidate, baseline=evidence.baseline)
        reason = f"rollout at {position.describe()}: {sentence}"
        tripped = self.routing.trip_guard(
            rule_id=rule.id,
            rules_version=self.router.table.version,
            reason=reason,
            figures=_evidence(judgement, evidence),
        )
        if not tripped:
            return False  # another gateway, or the guard, rolled it back first
        # In force here at once; other gateways load it with the trips on their next round.
        text = f"at {utcnow():%Y-%m-%d %H:%M:%S} UTC: {reason}"
        self.router.set_tripped({**self.router.tripped, rule.id: text})
        backend = self.router.table.rollback_backend(rule)
        self.records.record_event(
            rule_id=rule.id,
            action="rolled_back",
            by=GATEWAY,
            reason=f"{reason} Its runs go to {backend} until reset "
            f"(figway rules guard-reset {rule.id}).",
            percent=position.percent,
            evidence=_evidence(judgement, evidence),
        )
        log.warning("rollout of rule %r rolled back to %s: %s", rule.id, backend, reason)
        return True

    # -- people ------------------------------------------------------------------------

    def _row_of(self, rule_id: str) -> tuple[Rule, RolloutRow]:
        rule = next((r for r in self._stepped() if r.id == rule_id), None)
        if rule is None:
            stepped = ", ".join(r.id for r in self._stepped()) or "none"
            raise NotFoundError(
                f"rule {rule_id!r} has no steps in the rules in force (rules with steps: {stepped})"
            )
        row = self.records.rollout(rule_id=rule_id)
        if row is None:  # no gateway has started it yet: start this one only
            self._start(rule)
            row = self.records.rollout(rule_id=rule_id)
        assert row is not None
        return rule, row

    def pause(self, rule_id: str, *, by: str) -> RolloutRow:
        """Hold the rollout where it is; the guard keeps watching."""
        return self._set_state(rule_id, RolloutState.PAUSED, by=by, action="paused")

    def resume(self, rule_id: str, *, by: str) -> RolloutRow:
        """Let a paused or pinned rollout advance on evidence again."""
        return self._set_state(rule_id, RolloutState.RUNNING, by=by, action="resumed")

    def pin(self, rule_id: str, *, by: str, percent: float | None = None) -> RolloutRow:
        """Fix the rollout at one of its steps (the current one unless given) until resumed."""
        rule, row = self._row_of(rule_id)
        target = row.percent if percent is None else float(percent)
        if percent is not None and target not in row.steps:
            raise RolloutConflictError(
                f"{target:g}% is not a step of rule {rule_id!r}; its steps are "
                f"{_listing(row.steps)}"
            )
        before = position_of(row)
        after = RolloutPosition(target, row.steps, RolloutState.PINNED)
        reason = f"pinned at {after.describe()} (was {before.describe()}) by {by}"
        return self._move(rule, row, "pinned", by, reason, after, restart=target != row.percent)

    def _set_state(self, rule_id: str, state: RolloutState, *, by: str, action: str) -> RolloutRow:
        rule, row = self._row_of(rule_id)
        before = position_of(row)
        if state is RolloutState.RUNNING and before.state is RolloutState.COMPLETE:
            raise RolloutConflictError(
                f"the rollout of rule {rule_id!r} is complete; nothing to resume"
            )
        if before.state is state:
            raise RolloutConflictError(f"the rollout of rule {rule_id!r} is already {state.value}")
        if state is RolloutState.RUNNING and before.next_step is None:
            state = RolloutState.COMPLETE
        after = RolloutPosition(row.percent, row.steps, state)
        reason = f"{action} at {after.describe()} by {by}"
        return self._move(rule, row, action, by, reason, after, restart=False)

    def _move(
        self,
        rule: Rule,
        row: RolloutRow,
        action: str,
        by: str,
        reason: str,
        after: RolloutPosition,
        *,
        restart: bool,
    ) -> RolloutRow:
        moved = self._record(row, action=action, by=by, reason=reason, after=after, restart=restart)
        if not moved:
            raise RolloutConflictError(
                f"the rollout of rule {rule.id!r} moved while this was asked; look again"
            )
        log.warning("rollout of rule %r: %s", rule.id, reason)
        self.refresh()
        current = self.records.rollout(rule_id=rule.id)
        assert current is not None
        return current

    # -- planning ----------------------------------------------------------------------

    def status(self, *, now: datetime | None = None) -> list[RolloutStatus]:
        """Every stepped rule of the rules in force: position, evidence, what it still needs."""
        now = now or utcnow()
        rows = self.records.rollouts()
        result = []
        for rule in self._stepped():
            row = rows.get(rule.id)
            position = self.router.table.position(rule, _positions(rows))
            assert position is not None
            judgement = evidence = plan = None
            if row is not None and rule.judged is not None:
                judgement, evidence = self._judge(rule, row, now)
                plan = evidence.plan(judgement)
            result.append(
                RolloutStatus(
                    rule=rule,
                    position=position,
                    row=row,
                    judgement=judgement,
                    evidence=evidence,
                    plan=plan,
                    rolled_back=rule.id in self.router.tripped,
                )
            )
        return result


def _positions(rows: Mapping[str, RolloutRow]) -> dict[str, RolloutPosition]:
    return {rule_id: position_of(row) for rule_id, row in rows.items()}


def _evidence(judgement: Judgement, evidence: Evidence) -> dict[str, Any]:
    return {
        **judgement.as_dict(candidate=evidence.candidate, baseline=evidence.baseline),
        **evidence.as_dict(),
    }


def _listing(steps: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{s:g}" for s in steps) + "]"
