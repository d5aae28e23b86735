"""Faults a test can inject and undo: its own Redis, a cuttable link to PostgreSQL, a ledger.

- :class:`OwnRedis` is a ``redis-server`` of the test's own on a free port, which
  the test stops, kills (with or without its data) and starts again on the same
  port. Its data lives in an append-only file synced on every write, so a stop
  and start keeps every job, as a production Redis with persistence would.
- :class:`CuttableLink` forwards a port to a service (PostgreSQL) through
  :class:`~tests.support.tcp_proxy.TcpProxy`; ``cut()`` refuses new connections
  and drops open ones, as a dead server or network does; ``restore()`` listens on
  the same port again.
- :func:`count_execution` is a ``python`` node that writes one ledger line per
  execution, so a test can prove that nothing ran more often than its attempts.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from backends.nodes import NodeContext
from tests.support.figway_stack import Stack
from tests.support.processes import LoggedProcess, free_port
from tests.support.tcp_proxy import TcpProxy

__all__ = [
    "CuttableLink",
    "OwnRedis",
    "chain",
    "count_execution",
    "execution_problems",
    "executions",
    "start_runs",
    "wait_executing",
    "wait_running",
]


class OwnRedis:
    """A ``redis-server`` on a free loopback port, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: LoggedProcess | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.starts += 1
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
        self.process = LoggedProcess.start(
            f"redis-{self.starts}", argv, env={}, log_dir=self.directory
        )
        deadline = time.monotonic() + 30
        with redis.Redis(port=self.port) as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if not self.process.running() or time.monotonic() > deadline:
                        raise AssertionError(
                            f"redis-server did not start:\n{self.process.tail()}"
                        ) from None
                    time.sleep(0.05)

    def stop(self) -> None:
        """Shut Redis down as an operator would (SIGTERM); its data is kept."""
        assert self.process is not None
        self.process.stop()

    def kill(self, *, lose_data: bool = False) -> None:
        """SIGKILL Redis; ``lose_data`` also removes its files, as a host that died would."""
        assert self.process is not None
        self.process.kill_group()
        if lose_data:
            shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)

    @contextmanager
    def outage(self, seconds: float, *, lose_data: bool = False) -> Iterator[None]:
        """Redis is away for ``seconds`` (killed when ``lose_data``, else stopped), then back."""
        if lose_data:
            self.kill(lose_data=True)
        else:
            self.stop()
        try:
            time.sleep(seconds)
            yield
        finally:
            self.start()

    def close(self) -> None:
        if self.process is not None and self.process.running():
            self.process.kill_group()


class CuttableLink:
    """``127.0.0.1:port`` forwarded to ``target`` until cut, and again once restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._proxy: TcpProxy | None = TcpProxy(target)
        self.port = self._proxy.port

    def cut(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def restore(self) -> None:
        if self._proxy is None:
            self._proxy = TcpProxy(self.target, port=self.port)

    @contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        self.cut()
        try:
            time.sleep(seconds)
            yield
        finally:
            self.restore()

    def close(self) -> None:
        self.cut()


def count_execution(context: NodeContext, ledger: str, seconds: float = 0.0) -> dict[str, Any]:
    """A node that notes each execution in ``ledger`` (one line), then sleeps ``seconds``."""
    with Path(ledger).open("a") as out:
        out.write(f"{context.job_run_id} {context.node_id} {context.attempt}\n")
    context.wait(seconds)
    return {"attempt": context.attempt}


def executions(ledger: Path) -> Counter[tuple[str, str, int]]:
    """How often each (run, node, attempt) executed, from a :func:`count_execution` ledger."""
    if not ledger.exists():
        return Counter()
    lines = ledger.read_text().split()
    return Counter((lines[i], lines[i + 1], int(lines[i + 2])) for i in range(0, len(lines) - 2, 3))


def chain(
    ledger: Path,
    seconds: tuple[float, ...] = (1.5, 0.5),
    *,
    retries: int = 1,
    limits: dict[str, int] | None = None,
) -> Any:
    """A chain of :func:`count_execution` nodes ``n0 -> n1 -> ...``: (nodes, dependencies).

    With ``limits``, every node runs in a process of its own held to them."""
    nodes = {
        f"n{i}": {
            "type": "python",
            "config": {
                "callable": "tests.support.faults:count_execution",
                "kwargs": {"ledger": str(ledger), "seconds": pause},
            },
            "retries": retries,
            **({"limits": limits} if limits else {}),
        }
        for i, pause in enumerate(seconds)
    }
    dependencies = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(len(seconds))}
    return nodes, dependencies


def execution_problems(runs: dict[str, dict[str, Any]], ledger: Path) -> list[str]:
    """Where a node executed other than once per recorded attempt (empty when none)."""
    ran = executions(ledger)
    problems = []
    for job_run_id, run in runs.items():
        for node_id, node in run["nodes"].items():
            expected = {(job_run_id, node_id, a): 1 for a in range(1, node["attempts"] + 1)}
            actual = {key: n for key, n in ran.items() if key[:2] == (job_run_id, node_id)}
            if actual != expected:
                problems.append(
                    f"{job_run_id}/{node_id}: {node['attempts']} attempt(s) recorded, "
                    f"executions {sorted((k[2], n) for k, n in actual.items())}"
                )
    return problems


def start_runs(stack: Stack, workflow_id: str, count: int) -> list[str]:
    ids = [f"{workflow_id}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for job_run_id in ids:
        stack.start_run(workflow_id, job_run_id)
    return ids


def wait_running(stack: Stack, job_run_ids: list[str], *, at_least: int) -> None:
    """Wait until ``at_least`` nodes of these runs are running: the workers are busy."""
    deadline = time.monotonic() + 60
    while True:
        running = sum(
            node["status"] == "running"
            for job_run_id in job_run_ids
            for node in stack.get_run(job_run_id)["nodes"].values()
        )
        if running >= at_least:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} nodes running\n{stack.logs()}")
        time.sleep(0.05)


def wait_executing(ledger: Path, job_run_ids: list[str], *, at_least: int) -> None:
    """Wait until ``at_least`` executions of these runs are in the ledger (nodes really run).

    A node recorded ``running`` may not have reached its function yet; a test that kills
    its worker must wait for this, or the attempt counts no execution.
    """
    deadline = time.monotonic() + 60
    while sum(n for key, n in executions(ledger).items() if key[0] in job_run_ids) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} executions of {job_run_ids} began")
        time.sleep(0.05)
