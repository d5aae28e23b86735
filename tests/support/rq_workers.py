"""Real ``figway worker rq`` processes for the contract suite, with their logs kept for failures."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from redis import Redis
from rq import Worker

from tests.support.policy import test_policy_env
from tests.support.processes import LoggedProcess

__all__ = [
    "log_tails",
    "start_workers",
    "stop_workers",
    "worker_env",
]

FIGWAY = str(Path(sys.executable).with_name("figway"))


def worker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without its own FIGWAY_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIGWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(test_policy_env())
    env.update(settings)
    return env


def start_workers(
    count: int, *, settings: Mapping[str, str], redis_url: str, log_dir: Path
) -> list[LoggedProcess]:
    """Start ``count`` workers and wait until Redis lists every one of them."""
    workers = [
        LoggedProcess.start(
            name,
            [FIGWAY, "worker", "rq", "--name", name],
            env=worker_env(settings),
            log_dir=log_dir,
        )
        for name in (f"contract-worker-{index}-{os.getpid()}" for index in range(count))
    ]
    try:
        _wait_registered(workers, redis_url)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def _wait_registered(workers: list[LoggedProcess], redis_url: str) -> None:
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


def stop_workers(workers: list[LoggedProcess]) -> None:
    for worker in workers:
        if worker.popen.poll() is None:
            worker.kill_everything()


def log_tails(workers: list[LoggedProcess]) -> str:
    return "\n".join(f"--- {w.name} (pid {w.popen.pid}) ---\n{w.tail()}" for w in workers)
