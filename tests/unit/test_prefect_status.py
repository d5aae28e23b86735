"""How every Prefect state type reads as a figway run status (``backends/prefect/status_map.py``)."""

from __future__ import annotations

import pytest
from prefect.client.schemas.objects import TERMINAL_STATES, StateType

from backends.model.status import RUN_ACTIVE, RUN_TERMINAL, RunStatus
from backends.prefect.status_map import PREFECT_TO_RUN_STATUS


@pytest.mark.parametrize("state_type", list(StateType), ids=lambda s: s.value)
def test_every_prefect_state_type_maps_to_one_run_status(state_type: StateType) -> None:
    assert state_type in PREFECT_TO_RUN_STATUS, f"Prefect's {state_type} has no figway status"
    assert isinstance(PREFECT_TO_RUN_STATUS[state_type], RunStatus)


def test_the_table_holds_nothing_but_prefect_state_types() -> None:
    assert set(PREFECT_TO_RUN_STATUS) == set(StateType)


@pytest.mark.parametrize("state_type", sorted(TERMINAL_STATES, key=str), ids=lambda s: s.value)
def test_a_final_prefect_state_is_a_final_run_status(state_type: StateType) -> None:
    assert PREFECT_TO_RUN_STATUS[state_type] in RUN_TERMINAL


@pytest.mark.parametrize(
    ("state_type", "status"),
    [
        (StateType.SCHEDULED, RunStatus.QUEUED),
        (StateType.PENDING, RunStatus.QUEUED),
        (StateType.RUNNING, RunStatus.RUNNING),
        (StateType.COMPLETED, RunStatus.SUCCEEDED),
        (StateType.FAILED, RunStatus.FAILED),
        # The flow-run process died: the run cannot finish any more.
        (StateType.CRASHED, RunStatus.FAILED),
        (StateType.CANCELLING, RunStatus.CANCELLING),
        (StateType.CANCELLED, RunStatus.CANCELLED),
    ],
)
def test_what_each_prefect_state_means_for_the_run(
    state_type: StateType, status: RunStatus
) -> None:
    assert PREFECT_TO_RUN_STATUS[state_type] is status


@pytest.mark.parametrize(
    "state_type",
    [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING],
    ids=lambda s: s.value,
)
def test_an_unfinished_flow_run_is_an_active_run(state_type: StateType) -> None:
    assert PREFECT_TO_RUN_STATUS[state_type] in RUN_ACTIVE
