"""Where a rollout in steps stands, and how a change of its steps is reconciled (pure)."""

from __future__ import annotations

import pytest

from gateway.routing.rollout import (
    RolloutPosition,
    RolloutState,
    advanced,
    reconcile,
    start_position,
)

RUNNING, PAUSED, PINNED, COMPLETE = (
    RolloutState.RUNNING,
    RolloutState.PAUSED,
    RolloutState.PINNED,
    RolloutState.COMPLETE,
)
STEPS = (5.0, 25.0, 50.0, 100.0)


def at(
    percent: float, state: RolloutState = RUNNING, steps: tuple[float, ...] = STEPS
) -> RolloutPosition:
    return RolloutPosition(percent, steps, state)


def test_a_rollout_starts_at_its_first_step_and_advances_to_its_last() -> None:
    position = start_position([5, 25, 50, 100])
    assert (position.percent, position.step, position.state) == (5, 1, RUNNING)
    seen = [position.percent]
    while position.state is RUNNING:
        position = advanced(position)
        seen.append(position.percent)
    assert seen == [5, 25, 50, 100]
    assert position.state is COMPLETE
    assert start_position([100]).state is COMPLETE


@pytest.mark.parametrize(
    ("before", "steps", "after", "restart"),
    [
        pytest.param(at(25), STEPS, at(25), False, id="unchanged"),
        pytest.param(at(25), (10, 50, 100), at(25, steps=(10, 50, 100)), False, id="stays-between"),
        pytest.param(at(25), (25, 100), at(25, steps=(25, 100)), False, id="stays-on-a-step"),
        pytest.param(at(50), (5, 10), at(10, COMPLETE, (5, 10)), True, id="goes-down-to-last"),
        pytest.param(at(50), (5, 50), at(50, COMPLETE, (5, 50)), False, id="at-the-new-last"),
        pytest.param(
            at(50, COMPLETE, (5, 50)), STEPS, at(50), False, id="complete-resumes-when-it-goes-on"
        ),
        pytest.param(at(25, PAUSED), (10, 50), at(25, PAUSED, (10, 50)), False, id="paused-stays"),
        pytest.param(at(50, PINNED), (5, 10), at(10, PINNED, (5, 10)), True, id="pinned-stays"),
    ],
)
def test_changed_steps_are_reconciled_predictably(
    before: RolloutPosition,
    steps: tuple[float, ...],
    after: RolloutPosition,
    restart: bool,
) -> None:
    change = reconcile(before, steps)
    assert change.after == RolloutPosition(
        after.percent, tuple(float(s) for s in after.steps), after.state
    )
    assert change.restart_evidence is restart
    assert change.changed is (change.after != before)


def test_a_move_never_takes_a_job_back_unless_the_file_asks_for_less() -> None:
    """Monotone: the share after reconciling is below the share before only when the new
    last step is."""
    for percent in STEPS:
        for steps in [(5.0, 10.0), (10.0, 50.0, 100.0), (30.0,), (1.0, 2.0, 3.0, 100.0)]:
            after = reconcile(at(percent), steps).after
            assert after.percent >= min(percent, steps[-1])
