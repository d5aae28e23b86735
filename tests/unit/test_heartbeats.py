"""One heartbeat thread per process: every attempt registered is beaten, none after it
ended, a failing beat does not stop the others, and a forked process beats its own."""

from __future__ import annotations

import os
import threading
import time

from backends.runtime.heartbeats import Heartbeats


def wait_for(event: threading.Event) -> None:
    assert event.wait(10), "no beat within 10 s"


def test_every_attempt_is_beaten_by_one_thread_and_never_after_it_ends() -> None:
    heartbeats = Heartbeats(0.01)
    first, second = threading.Event(), threading.Event()
    threads: set[str] = set()
    ended = threading.Event()
    late: list[str] = []

    def beat(seen: threading.Event, name: str) -> None:
        threads.add(threading.current_thread().name)
        if ended.is_set():
            late.append(name)
        seen.set()

    with heartbeats.beating(lambda: beat(first, "first")):
        with heartbeats.beating(lambda: beat(second, "second")):
            wait_for(first)
            wait_for(second)
        ended.set()
    time.sleep(0.1)  # a few periods: a late beat would have come by now
    assert late == []
    assert threads == {"node-heartbeats"}


def test_a_failing_beat_does_not_stop_the_others() -> None:
    heartbeats = Heartbeats(0.01)
    seen = threading.Event()

    def broken() -> None:
        raise RuntimeError("database gone")

    with heartbeats.beating(broken), heartbeats.beating(seen.set):
        wait_for(seen)
        seen.clear()
        wait_for(seen)  # and again: the thread lived on


def test_a_forked_process_beats_its_own_attempts() -> None:
    heartbeats = Heartbeats(0.01)
    with heartbeats.beating(lambda: None):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child answers with its exit code
            seen = threading.Event()
            with heartbeats.beating(seen.set):
                os._exit(0 if seen.wait(10) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
