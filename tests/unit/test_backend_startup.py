"""A backend started in the background: what a waiting run and /readyz are told."""

from __future__ import annotations

import threading

from gateway.upkeep.backend_startup import BackendStartup


def test_while_it_starts_a_run_is_told_what_it_waits_for_and_then_nothing() -> None:
    release = threading.Event()
    clock = iter([100.0, 112.4, 112.4, 130.0, 130.0]).__next__
    startup = BackendStartup("prefect", "Prefect's temporary API", release.wait, clock=clock)
    thread = startup.begin()
    assert startup.state == "starting"
    assert startup.waiting_for() == (
        "Prefect's temporary API, starting for 12 s (the first start creates its database); "
        "the run starts as soon as it is up"
    )
    release.set()
    thread.join()
    assert startup.state == "ready"
    assert startup.waiting_for() is None
    assert startup.as_dict() == {"state": "ready", "seconds": 30.0}


def test_a_start_that_fails_is_reported_and_nothing_is_said_to_wait_for() -> None:
    def refuse() -> None:
        raise RuntimeError("port in use")

    startup = BackendStartup("prefect", "Prefect's temporary API", refuse)
    startup.begin().join()
    assert startup.state == "failed"
    assert startup.waiting_for() is None
    assert startup.as_dict()["error"] == "port in use"


def test_it_starts_once_however_often_it_is_asked() -> None:
    calls: list[int] = []
    startup = BackendStartup("prefect", "it", lambda: calls.append(1))
    startup.begin().join()
    startup.begin().join()
    assert calls == [1]
