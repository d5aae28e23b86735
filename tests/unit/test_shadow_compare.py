"""Comparing a run with its shadow: every difference is named, equal runs have none."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from backends.model.status import NodeStatus, RunStatus
from backends.store import NodeView, RunView
from gateway.routing.shadow import compare_runs, output_fingerprint

AT = datetime(2026, 11, 29, tzinfo=UTC)


def node(
    status: NodeStatus = NodeStatus.SUCCEEDED, attempts: int = 1, output: Any = None
) -> NodeView:
    return NodeView("n", "noop", status, attempts, 3, None, output, AT, AT)


def run(backend: str, **nodes: NodeView) -> RunView:
    return RunView(
        job_run_id="r",
        workflow_id="w",
        workspace_id="ws",
        folder_id="f",
        job_id="j",
        from_job=None,
        backend=backend,
        status=RunStatus.SUCCEEDED,
        error=None,
        created_at=AT,
        submitted_at=AT,
        started_at=AT,
        finished_at=AT,
        nodes=dict(nodes),
    )


def test_equal_runs_on_two_backends_have_no_mismatch() -> None:
    primary = run("rq", a=node(output={"x": 1, "y": [1, 2]}), b=node(attempts=2))
    shadow = run("prefect", a=node(output={"y": [1, 2], "x": 1}), b=node(attempts=2))
    assert compare_runs(primary, shadow) == []


@pytest.mark.parametrize(
    ("shadow_node", "field", "primary_value", "shadow_value"),
    [
        pytest.param(node(NodeStatus.FAILED), "status", "succeeded", "failed", id="status"),
        pytest.param(node(attempts=2), "attempts", 1, 2, id="attempts"),
        pytest.param(
            node(output={"rows": 2}),
            "output_fingerprint",
            output_fingerprint({"rows": 1}),
            output_fingerprint({"rows": 2}),
            id="output",
        ),
    ],
)
def test_each_node_difference_is_named(
    shadow_node: NodeView, field: str, primary_value: Any, shadow_value: Any
) -> None:
    primary = run("rq", load=node(output={"rows": 1}))
    shadow = run("prefect", load=replace(shadow_node, output=shadow_node.output or {"rows": 1}))
    assert compare_runs(primary, shadow) == [
        {"node": "load", "field": field, "primary": primary_value, "shadow": shadow_value}
    ]


def test_a_different_run_status_and_a_missing_node_are_named() -> None:
    primary = run("rq", a=node(), b=node())
    shadow = replace(run("prefect", a=node()), status=RunStatus.FAILED)
    assert compare_runs(primary, shadow) == [
        {"node": None, "field": "status", "primary": "succeeded", "shadow": "failed"},
        {"node": "b", "field": "present", "primary": True, "shadow": False},
    ]
