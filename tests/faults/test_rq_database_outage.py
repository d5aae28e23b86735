"""A PostgreSQL outage delays RQ runs and fails none of them, nodes held to limits included.

Issue 13, defect 2: during a 10 s outage workers kept taking jobs and each
failed at once in ``start_attempt``; RQ marked the jobs failed and left their
children deferred while the database still said ``queued``, and single-node
runs failed "was Redis flushed or restarted?". Now an attempt that cannot
record its start waits for the database, so nothing fails and nothing runs twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import CuttableLink, chain, execution_problems, start_runs, wait_running
from tests.support.figway_stack import Stack

pytestmark = pytest.mark.service

SETTLE_SECONDS = 90


def test_runs_in_flight_through_a_database_outage_all_succeed_once(
    stack: Stack, pg_link: CuttableLink, ledger: Path
) -> None:
    nodes, dependencies = chain(ledger, (0.5, 0.3, 0.3))
    stack.put_workflow("pg_chain", nodes, dependencies)
    single, _ = chain(ledger, (0.2,))
    stack.put_workflow("pg_single", single, {"n0": []})
    # Nodes held to limits run in a process of their own, which records through its
    # attempt's process: that path waits out the outage too.
    limited, _ = chain(ledger, (0.5, 0.3, 0.3), limits={"memory_mb": 256, "cpu_seconds": 30})
    stack.put_workflow("pg_limited", limited, dependencies)
    held = start_runs(stack, "pg_limited", 4)
    ids = held + start_runs(stack, "pg_chain", 8) + start_runs(stack, "pg_single", 4)
    wait_running(stack, held, at_least=1)

    with pg_link.outage(10):
        pass  # every process loses the database: the gateway and both workers

    runs = stack.wait_for_all(ids, timeout=SETTLE_SECONDS)
    assert {run["status"] for run in runs.values()} == {"succeeded"}, runs
    # Waiting out the outage is not a retry: every node ran exactly once.
    assert {node["attempts"] for run in runs.values() for node in run["nodes"].values()} == {1}
    assert execution_problems(runs, ledger) == []
