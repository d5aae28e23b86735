"""A forked work horse records its node through the worker's connection (backends/rq/store_relay.py).

Each test forks a real child, as RQ's worker does, and the child reports by its
exit code what it saw: 0 all as expected, 3 a wrong answer, 4 it opened a
database connection of its own, 5 something raised.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

from sqlalchemy import event

from backends.model.errors import StoreError
from backends.model.status import NodeStatus, RunStatus
from backends.rq.store_relay import RelayedStore, StoreRelay
from backends.store import LogRecord, Store, utcnow
from tests.support.plans import journal, start_run

WRONG, CONNECTED, RAISED = 3, 4, 5


def in_horse(store: Store, relay: StoreRelay, check: Callable[[RelayedStore], bool]) -> int:
    """Fork; the child runs ``check`` on its relayed store; the exit code of the child."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            opened: list[object] = []
            event.listen(store.engine, "connect", lambda *_: opened.append(1))
            if not check(relay.in_horse(store)):
                code = WRONG
            elif opened:
                code = CONNECTED
        except BaseException:
            traceback.print_exc()
            code = RAISED
        os._exit(code)
    relay.in_worker()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_horse_runs_its_node_through_the_worker_without_connecting(store: Store) -> None:
    run = start_run(store, {"a": "noop", "b": "noop"}, {"b": ["a"]}).job_run_id
    line = LogRecord(job_run_id=run, node_id="a", attempt=1, at=utcnow(), level="INFO", message="x")

    def node_a(relayed: RelayedStore) -> bool:
        begun = relayed.start_attempt(job_run_id=run, node_id="a", attempt=1)
        alive = relayed.heartbeat(job_run_id=run, node_id="a", attempt=1)
        relayed.append_logs([line])
        done = relayed.record_node(
            job_run_id=run, node_id="a", attempt=1, status=NodeStatus.SUCCEEDED, output={"n": 1}
        )
        return begun.outcome.applied and begun.spec is not None and alive and done.applied

    store.engine.dispose()  # the child must not inherit a connection either
    assert in_horse(store, StoreRelay(store), node_a) == 0

    def node_b(relayed: RelayedStore) -> bool:
        begun = relayed.start_attempt(job_run_id=run, node_id="b", attempt=1)
        return dict(begun.upstream_outputs) == {"a": {"n": 1}}

    assert in_horse(store, StoreRelay(store), node_b) == 0
    assert journal(store, run)[-2:] == [("a", 1, "succeeded"), ("b", 1, "running")]
    assert [entry.message for _, entry in store.logs(job_run_id=run)] == ["x"]


def test_the_workers_errors_reach_the_horse_as_store_errors(store: Store) -> None:
    def unknown_run(relayed: RelayedStore) -> bool:
        try:
            relayed.start_attempt(job_run_id="no-such-run", node_id="a", attempt=1)
        except StoreError as exc:
            return "no-such-run" in str(exc)
        return False

    assert in_horse(store, StoreRelay(store), unknown_run) == 0


def test_a_horse_whose_worker_is_gone_records_on_its_own_connection(store: Store) -> None:
    run = start_run(store, {"a": "noop"}).job_run_id
    ready_to_go, go = os.pipe()
    relay = StoreRelay(store)
    pid = os.fork()
    if pid == 0:
        code = WRONG
        try:
            relayed = relay.in_horse(store)
            os.read(ready_to_go, 1)  # the worker has gone
            if relayed.start_attempt(job_run_id=run, node_id="a", attempt=1).outcome.applied:
                code = 0
        except BaseException:
            traceback.print_exc()
            code = RAISED
        os._exit(code)
    relay.close()  # the worker is gone before serving anything
    os.write(go, b"x")
    _, status = os.waitpid(pid, 0)
    os.close(ready_to_go)
    os.close(go)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.run_status(job_run_id=run) is RunStatus.RUNNING
