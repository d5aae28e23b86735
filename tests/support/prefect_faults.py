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
from tests.support.tcp_proxy import TcpProxy

__all__ = [
    "CuttableLink",
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


def wait_until(what: str, check: Callable[[], Any], *, timeout: float, context: str = "") -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{context}")
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
