"""Real ``figway worker rq`` processes for the contract suite, with their logs kept for failures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from rq import Worker

__all__ = [
    "WorkerProcess",
    "descendants",
    "log_tails",
    "start_workers",
    "stop_workers",
    "worker_env",
]

FIGWAY = str(Path(sys.executable).with_name("figway"))


@dataclass
class WorkerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker, its scheduler and its work horse (which has a group of its own)."""
        family = [*descendants(self.popen.pid), self.popen.pid]
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (children first found, deepest last)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue  # the thread or process ended meanwhile
            found.extend(kids)
            frontier.extend(kids)
    return found


def worker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without its own FIGWAY_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIGWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def start_workers(
    count: int, *, settings: Mapping[str, str], redis_url: str, log_dir: Path
) -> list[WorkerProcess]:
    """Start ``count`` workers and wait until Redis lists every one of them."""
    workers: list[WorkerProcess] = []
    for index in range(count):
        name = f"contract-worker-{index}-{os.getpid()}"
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [FIGWAY, "worker", "rq", "--name", name],
                env=worker_env(settings),
                cwd=log_dir,  # no stray .env file is read
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        workers.append(WorkerProcess(name, popen, log_path))
    try:
        _wait_registered(workers, redis_url)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def _wait_registered(workers: list[WorkerProcess], redis_url: str) -> None:
    wanted = {w.name for w in workers}
    deadline = time.monotonic() + 60
    with Redis.from_url(redis_url) as redis:
        while True:
            dead = [w for w in workers if w.popen.poll() is not None]
            if dead:
                raise RuntimeError(
                    "an RQ worker exited at start:\n" + "\n".join(w.tail() for w in dead)
                )
            if wanted <= {w.name for w in Worker.all(connection=redis)}:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "RQ workers did not register within 60 s:\n"
                    + "\n".join(w.tail() for w in workers)
                )
            time.sleep(0.1)


def stop_workers(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if worker.popen.poll() is None:
            worker.kill()


def log_tails(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.name} (pid {w.popen.pid}) ---\n{w.tail()}" for w in workers)
