"""What the Prefect fault tests share: a node that tallies its executions, and checks
of Prefect's record against figway's after a fault.

The Prefect server and worker they kill and restart are their own
(``prefect_services.own_prefect_services``), never the session's shared ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import TERMINAL_STATES

from tests.support.prefect_services import PrefectServices, flow_runs_of
from tests.support.prefect_stack import PrefectStack
from tests.support.tcp_proxy import TcpProxy

__all__ = [
    "CuttableLink",
    "assert_executions_are_attempts",
    "assert_settled_and_agreeing",
    "counted_sleep",
    "executions",
    "tally_node",
    "unfinished_task_runs",
    "wait_until",
]


def counted_sleep(tally: str, seconds: float) -> dict[str, Any]:
    """A python node's callable: one line in ``tally`` per execution, then a sleep.

    The line is written before the sleep, so an execution a fault cut short counts.
    """
    with open(tally, "a") as out:
        out.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return {"slept_seconds": seconds}


def tally_node(tally_dir: Path, node_id: str, seconds: float, *, retries: int) -> dict[str, Any]:
    """A node definition running :func:`counted_sleep` with a tally file of its own."""
    return {
        "type": "python",
        "config": {
            "callable": "tests.support.prefect_faults:counted_sleep",
            "kwargs": {"tally": str(tally_dir / f"{node_id}.tally"), "seconds": seconds},
        },
        "retries": retries,
    }


def executions(tally_dir: Path, node_id: str) -> int:
    """How many times the node ran, across every run of its workflow."""
    path = tally_dir / f"{node_id}.tally"
    return len(path.read_text().splitlines()) if path.exists() else 0


def assert_executions_are_attempts(
    tally_dir: Path, runs: list[dict[str, Any]], context: str
) -> None:
    """Every node ran exactly as many times as figway counts its attempts, over ``runs``
    (all the runs of their workflow: a node's tally file is shared by them)."""
    for node in runs[0]["nodes"]:
        counted = sum(run["nodes"][node]["attempts"] for run in runs)
        assert executions(tally_dir, node) == counted, f"node {node}: {counted} attempts\n{context}"


def assert_settled_and_agreeing(
    stack: PrefectStack, job_run_ids: list[str], tally_dir: Path, *, timeout: float
) -> list[dict[str, Any]]:
    """After a fault: every run succeeded, with no error, each node ran once per attempt,
    and Prefect's record agrees (no flow run or task run of them left unfinished).

    Returns the runs as figway shows them.
    """
    runs = [stack.wait_for_end(job_run_id, timeout=timeout) for job_run_id in job_run_ids]
    context = "\n".join(stack.explain(job_run_id) for job_run_id in job_run_ids)
    assert [r["status"] for r in runs] == ["succeeded"] * len(runs), context
    assert all(r["error"] is None for r in runs), context
    assert_executions_are_attempts(tally_dir, runs, context)
    services = stack.services
    wait_until(
        "Prefect's flow runs and task runs all finished",
        lambda: (
            not services.unfinished_flow_runs() and not unfinished_task_runs(services, job_run_ids)
        ),
        timeout=timeout,
        context=lambda: f"{unfinished_task_runs(services, job_run_ids)}\n{context}",
    )
    return runs


def unfinished_task_runs(services: PrefectServices, job_run_ids: Iterable[str]) -> list[str]:
    """Task runs of these runs' flow runs that Prefect does not hold finished."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = []
    with services.client() as client:
        for job_run_id in job_run_ids:
            flow_run_ids = [r.id for r in flow_runs_of(client, job_run_id)]
            if not flow_run_ids:
                continue
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
            )
            found += [
                f"{job_run_id}/{t.name}: {t.state_type}"
                for t in task_runs
                if t.state_type not in TERMINAL_STATES
            ]
    return found


def wait_until(
    what: str,
    check: Callable[[], Any],
    *,
    timeout: float,
    context: str | Callable[[], str] = "",
) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` otherwise.

    ``context`` says more in the failure: a text, or a function read at the failure
    (what is still out of line then, not before the wait).
    """
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            said = context() if callable(context) else context
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{said}")
        time.sleep(0.25)
    return result


class CuttableLink:
    """A TCP path to ``target`` that a test cuts (every connection dropped, new ones
    refused, as while a database restarts) and restores on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._proxy = TcpProxy(target)
        self.port = self._proxy.port

    def cut(self) -> None:
        self._proxy.stop()

    def restore(self) -> None:
        self._proxy = TcpProxy(self.target, port=self.port)

    def close(self) -> None:
        self._proxy.stop()
