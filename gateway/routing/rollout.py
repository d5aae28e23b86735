"""Where a rollout in steps stands, and how a change of its steps in the file is reconciled.

A rule with ``steps: [5, 25, 50, 100]`` sends that share of its runs to its backend,
one step at a time. The share in force (its *position*) lives in the database, shared
by every gateway (``backends/store/rollout_records.py``); the gateway moves it on the
judge's evidence (``gateway/routing/promotion.py``). This module is the pure part:
what a position is, and what becomes of it when the file changes the steps.

Buckets stay sticky and monotone because the position is a percentage of the same
hash (``bucketing.py``): every job inside 5% is inside 25% too.

**Reconciling changed steps**, predictably, and never moving a job on its own:

- the percentage in force stays when it is not above the new last step; the next
  advance goes to the first new step above it (evidence gathered at that percentage
  still counts);
- when the new last step is below the percentage in force, the rollout goes down to
  that last step (the file asks for less) and its evidence starts again;
- a rollout that had finished resumes when the new steps go further; one that
  reaches the new last step has finished; paused and pinned rollouts stay so.

>>> at_25 = RolloutPosition(25.0, (5.0, 25.0, 50.0, 100.0), RolloutState.RUNNING)
>>> reconcile(at_25, (10.0, 50.0, 100.0)).after.describe()
'25% (between steps; next 50%)'
>>> reconcile(at_25, (5.0, 10.0)).text
'the new last step, 10%, is below the 25% in force: the rollout goes down to 10% and its evidence starts again'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "Reconciliation",
    "RolloutPosition",
    "RolloutState",
    "advanced",
    "reconcile",
    "start_position",
]


class RolloutState(StrEnum):
    RUNNING = "running"  # advances on "not worse", holds on "inconclusive"
    PAUSED = "paused"  # a person holds it where it is; the guard still watches
    PINNED = "pinned"  # a person fixed it at a step of their choosing
    COMPLETE = "complete"  # at its last step; nothing more to decide


@dataclass(frozen=True)
class RolloutPosition:
    """The share in force for one rule, the steps it walks, and whether it may move."""

    percent: float
    steps: tuple[float, ...]
    state: RolloutState

    @property
    def step(self) -> int | None:
        """1-based index of the percentage among the steps; None between steps."""
        return self.steps.index(self.percent) + 1 if self.percent in self.steps else None

    @property
    def next_step(self) -> float | None:
        return next((step for step in self.steps if step > self.percent), None)

    def describe(self) -> str:
        """``25% (step 2 of 4)``, or ``25% (between steps; next 50%)``.

        >>> RolloutPosition(25.0, (5.0, 25.0, 50.0), RolloutState.PAUSED).describe()
        '25% (step 2 of 3, paused)'
        """
        state = "" if self.state is RolloutState.RUNNING else f", {self.state.value}"
        if self.step is not None:
            return f"{self.percent:g}% (step {self.step} of {len(self.steps)}{state})"
        following = self.next_step
        after = f"; next {following:g}%" if following is not None else ""
        return f"{self.percent:g}% (between steps{after}{state})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "step": self.step,
            "steps": list(self.steps),
            "next_step": self.next_step,
            "state": self.state.value,
            "text": self.describe(),
        }


def start_position(steps: Sequence[float]) -> RolloutPosition:
    """Where a rollout begins: its first step (finished at once if it has only one)."""
    first = float(steps[0])
    state = RolloutState.COMPLETE if len(steps) == 1 else RolloutState.RUNNING
    return RolloutPosition(first, tuple(float(s) for s in steps), state)


@dataclass(frozen=True)
class Reconciliation:
    """What a change of steps does to a rollout in force."""

    before: RolloutPosition
    after: RolloutPosition
    restart_evidence: bool
    text: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def reconcile(position: RolloutPosition, new_steps: Sequence[float]) -> Reconciliation:
    """The position under ``new_steps`` (the module docstring states the rules)."""
    steps = tuple(float(s) for s in new_steps)
    if steps == position.steps:
        return Reconciliation(position, position, False, "steps unchanged")
    last = steps[-1]
    if position.percent > last:
        after = RolloutPosition(last, steps, _settled(position.state, last, steps))
        text = (
            f"the new last step, {last:g}%, is below the {position.percent:g}% in force: "
            f"the rollout goes down to {last:g}% and its evidence starts again"
        )
        return Reconciliation(position, after, True, text)
    after = RolloutPosition(
        position.percent, steps, _settled(position.state, position.percent, steps)
    )
    text = f"the rollout stays at {after.describe()}"
    if after.state is not position.state:
        text += f"; it was {position.state.value}, it is now {after.state.value}"
    return Reconciliation(position, after, False, text)


def _settled(state: RolloutState, percent: float, steps: tuple[float, ...]) -> RolloutState:
    if state in (RolloutState.PAUSED, RolloutState.PINNED):
        return state
    return RolloutState.COMPLETE if percent >= steps[-1] else RolloutState.RUNNING


def advanced(position: RolloutPosition) -> RolloutPosition:
    """The position one step on (its last step finishes it)."""
    following = position.next_step
    if following is None:
        return replace(position, state=RolloutState.COMPLETE)
    state = RolloutState.COMPLETE if following >= position.steps[-1] else RolloutState.RUNNING
    return RolloutPosition(following, position.steps, state)
