"""Status tables: node transitions, and how every RQ job status reads as a node status."""

from __future__ import annotations

from collections import deque

import pytest
from rq.job import JobStatus

from backends.model.status import (
    NODE_TERMINAL,
    RUN_ACTIVE,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    node_transition_allowed,
)
from backends.rq.status_map import RQ_TO_NODE_STATUS


def reachable_from(start: NodeStatus) -> set[NodeStatus]:
    """Every node status that a chain of allowed transitions leads to from ``start``."""
    seen = {start}
    frontier = deque([start])
    while frontier:
        current = frontier.popleft()
        for candidate in NodeStatus:
            if candidate not in seen and node_transition_allowed(current, candidate):
                seen.add(candidate)
                frontier.append(candidate)
    return seen


@pytest.mark.parametrize("terminal", sorted(NODE_TERMINAL))
def test_a_terminal_node_status_never_moves(terminal: NodeStatus) -> None:
    moves = [new for new in NodeStatus if node_transition_allowed(terminal, new)]
    assert moves == [], f"{terminal} may move to {moves}"


def test_the_terminal_node_statuses_are_the_designed_ones() -> None:
    assert set(NODE_TERMINAL) == {
        NodeStatus.SUCCEEDED,
        NodeStatus.FAILED,
        NodeStatus.SKIPPED,
        NodeStatus.CANCELLED,
    }


def test_every_node_status_is_reachable_from_pending() -> None:
    assert reachable_from(NodeStatus.PENDING) == set(NodeStatus)


@pytest.mark.parametrize("status", sorted(set(NodeStatus) - NODE_TERMINAL))
def test_every_unfinished_node_can_still_be_cancelled(status: NodeStatus) -> None:
    assert node_transition_allowed(status, NodeStatus.CANCELLED)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (NodeStatus.PENDING, NodeStatus.QUEUED),
        (NodeStatus.PENDING, NodeStatus.RUNNING),  # a worker faster than the submitter
        (NodeStatus.PENDING, NodeStatus.SKIPPED),
        (NodeStatus.QUEUED, NodeStatus.RUNNING),
        (NodeStatus.QUEUED, NodeStatus.SKIPPED),
        (NodeStatus.RUNNING, NodeStatus.SUCCEEDED),
        (NodeStatus.RUNNING, NodeStatus.FAILED),
        (NodeStatus.RUNNING, NodeStatus.RETRYING),
        (NodeStatus.RUNNING, NodeStatus.RUNNING),  # a later attempt after a lost worker
        (NodeStatus.RETRYING, NodeStatus.RUNNING),
        (NodeStatus.RETRYING, NodeStatus.FAILED),  # the reconciler gives up on a retry
    ],
)
def test_designed_node_moves_are_allowed(current: NodeStatus, new: NodeStatus) -> None:
    assert node_transition_allowed(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (NodeStatus.QUEUED, NodeStatus.PENDING),
        (NodeStatus.RUNNING, NodeStatus.QUEUED),
        (NodeStatus.RUNNING, NodeStatus.SKIPPED),  # a started node finishes on its own
        (NodeStatus.PENDING, NodeStatus.SUCCEEDED),  # nothing succeeds without running
        (NodeStatus.RETRYING, NodeStatus.SUCCEEDED),
        (NodeStatus.RETRYING, NodeStatus.SKIPPED),
    ],
)
def test_undesigned_node_moves_are_refused(current: NodeStatus, new: NodeStatus) -> None:
    assert not node_transition_allowed(current, new)


def test_run_status_sets_do_not_overlap() -> None:
    assert not RUN_TERMINAL & RUN_ACTIVE
    assert {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED} == RUN_TERMINAL
    assert RunStatus.PENDING not in RUN_TERMINAL | RUN_ACTIVE


def test_statuses_are_the_api_strings() -> None:
    assert [s.value for s in RunStatus] == [
        "pending",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelling",
        "cancelled",
    ]
    assert {s.value for s in NodeStatus} == {s.value for s in RunStatus} - {"cancelling"} | {
        "retrying",
        "skipped",
    }


@pytest.mark.parametrize("rq_status", list(JobStatus), ids=lambda s: s.value)
def test_every_rq_job_status_maps_to_one_node_status(rq_status: JobStatus) -> None:
    assert rq_status in RQ_TO_NODE_STATUS, f"RQ status {rq_status!r} has no figway node status"
    assert isinstance(RQ_TO_NODE_STATUS[rq_status], NodeStatus)


def test_the_rq_table_names_only_real_rq_statuses() -> None:
    assert set(RQ_TO_NODE_STATUS) == set(JobStatus)


@pytest.mark.parametrize(
    ("rq_status", "node_status"),
    [
        (JobStatus.QUEUED, NodeStatus.QUEUED),
        (JobStatus.DEFERRED, NodeStatus.QUEUED),
        (JobStatus.STARTED, NodeStatus.RUNNING),
        (JobStatus.FINISHED, NodeStatus.SUCCEEDED),
        (JobStatus.FAILED, NodeStatus.FAILED),
        (JobStatus.CANCELED, NodeStatus.CANCELLED),
        (JobStatus.STOPPED, NodeStatus.CANCELLED),
    ],
)
def test_rq_statuses_read_as_expected(rq_status: JobStatus, node_status: NodeStatus) -> None:
    assert RQ_TO_NODE_STATUS[rq_status] is node_status
