"""A node transition on PostgreSQL in one round trip.

``figway_node_transition()`` (migration 0010) locks the run, journals the move,
moves the node, and what follows from it (the run starting, downstream nodes
skipped, the run ending), and keeps the attempt's log lines, in one statement
run in autocommit: one round trip where the same work as separate statements
takes a dozen and a BEGIN and a COMMIT. SQLite keeps the statement-by-statement
path in :mod:`backends.store.runs`, which is the reference both are tested
against.

Which moves are allowed stays in Python (:func:`~backends.model.status.node_transition_allowed`):
the call passes the statuses the node may come from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Engine, text

from backends.model.status import (
    NODE_TERMINAL,
    NODE_UNFINISHED_VALUES,
    RUN_TERMINAL_VALUES,
    NodeStatus,
    RunStatus,
    node_transition_allowed,
)
from backends.store.transactions import autocommit
from backends.store.views import LogRecord, NodeOutcome

__all__ = ["TransitionResult", "call_node_transition"]

_CALL = text(
    "SELECT figway_node_transition(:run, :node, :attempt, :status, :now, :error,"
    " CAST(:output AS json), CAST(:logs AS json), :allowed_from, :node_terminal,"
    " :node_unfinished, :run_terminal, :starting)"
)
_NODE_TERMINAL_VALUES = sorted(NODE_TERMINAL)


@dataclass(frozen=True)
class TransitionResult:
    outcome: NodeOutcome
    #: The run's plan document, when the transition started an attempt.
    plan: Any = None
    upstream_outputs: dict[str, Any] = field(default_factory=dict)


@cache
def _allowed_from(status: NodeStatus) -> list[str]:
    return sorted(s for s in NodeStatus if node_transition_allowed(s, status))


def call_node_transition(
    engine: Engine,
    *,
    job_run_id: str,
    node_id: str,
    attempt: int,
    status: NodeStatus,
    now: datetime,
    error: str | None = None,
    output: Any = None,
    logs: Sequence[LogRecord] = (),
    starting: bool = False,
) -> TransitionResult:
    """Apply one node transition; ``starting`` also checks and returns the attempt's inputs."""
    parameters = {
        "run": job_run_id,
        "node": node_id,
        "attempt": attempt,
        "status": status.value,
        "now": now,
        "error": error,
        "output": None if output is None else json.dumps(output),
        "logs": json.dumps([_log_row(record) for record in logs]),
        "allowed_from": _allowed_from(status),
        "node_terminal": _NODE_TERMINAL_VALUES,
        "node_unfinished": list(NODE_UNFINISHED_VALUES),
        "run_terminal": list(RUN_TERMINAL_VALUES),
        "starting": starting,
    }
    with autocommit(engine) as connection:
        answer: dict[str, Any] = connection.execute(_CALL, parameters).scalar_one()
    outcome = NodeOutcome(
        applied=answer["applied"],
        node_status=NodeStatus(answer["node_status"]),
        run_status=RunStatus(answer["run_status"]),
        skipped=tuple(answer.get("skipped") or ()),
        ready=tuple(answer.get("ready") or ()),
    )
    return TransitionResult(
        outcome, plan=answer.get("plan"), upstream_outputs=answer.get("upstream_outputs") or {}
    )


def _log_row(record: LogRecord) -> dict[str, Any]:
    return {
        "job_run_id": record.job_run_id,
        "node_id": record.node_id,
        "attempt": record.attempt,
        "at": record.at.isoformat(),
        "level": record.level,
        "message": record.message,
    }
