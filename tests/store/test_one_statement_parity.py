"""PostgreSQL's one-statement writes against the statement-by-statement path (SQLite's).

Both paths run the same script of moves, on the same PostgreSQL database, each on a
run of its own; every answer, the journals, the nodes and the runs must come out
the same. The script walks the state machine's corners: a lost attempt, a retry,
a failure skipping its downstream nodes, duplicates, a start before its inputs
exist, the run ending, moves after that, and unknown runs and nodes; and a run's
creation and submission, from each state a submission can find the run in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from backends.model.errors import StoreError
from backends.model.status import NodeStatus as N
from backends.store import LogRecord, NodeOutcome, RunView, Store, create_database_engine, utcnow
from backends.store.models import LogLine, NodeRun, Run, Transition
from backends.store.views import Route
from tests.support.plans import journal, make_plan, start_run

pytestmark = pytest.mark.service

NODES = {n: "noop" for n in "abcdefgh"}
EDGES = {"b": ["a"], "c": ["b"], "d": ["a"], "g": ["f"], "h": ["d", "e"]}


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[Store, Store]]:
    engine = create_database_engine(pg_url)
    yield Store(engine), Store(engine, one_statement_writes=False)
    engine.dispose()


def script(store: Store, run: str) -> list[Any]:
    """Every move of the script, with what the store answered to each."""
    answers: list[Any] = []

    def record(node: str, attempt: int, status: N, **extra: Any) -> None:
        answers.append(
            store.record_node(job_run_id=run, node_id=node, attempt=attempt, status=status, **extra)
        )

    def start(node: str, attempt: int = 1) -> None:
        begun = store.start_attempt(job_run_id=run, node_id=node, attempt=attempt)
        answers.append((begun.outcome, dict(begun.upstream_outputs), begun.spec))

    def refused(action: Callable[[], object]) -> None:
        with pytest.raises(StoreError) as raised:
            action()
        answers.append(str(raised.value).replace(run, "<run>"))

    line = LogRecord(
        job_run_id=run, node_id="a", attempt=2, at=utcnow(), level="INFO", message="hi"
    )
    start("a")
    start("a", 2)  # attempt 1 never reported: its worker was lost
    start("a", 1)  # a stale redelivery of attempt 1
    record("a", 2, N.SUCCEEDED, output={"rows": 3, "name": "ä"}, logs=[line])
    start("c")  # before its input exists
    start("b")
    record("b", 1, N.RETRYING, error="boom")
    start("b", 2)
    record("b", 2, N.FAILED, error="boom again")  # skips c
    record("b", 2, N.FAILED, error="boom again")  # a duplicate
    start("c")  # skipped already
    start("d")
    record("d", 1, N.SUCCEEDED, output=None)
    start("f")
    record("f", 1, N.FAILED, error="no")  # skips g
    start("e")
    record("e", 1, N.SUCCEEDED, output=[1, 2])  # h's second parent: h is ready
    start("h")
    record("h", 1, N.SUCCEEDED)  # the last node: the run ends
    record("e", 1, N.CANCELLED)  # after the end
    refused(lambda: store.record_node(job_run_id=run, node_id="zz", attempt=1, status=N.RUNNING))
    refused(lambda: store.start_attempt(job_run_id="no-such-run", node_id="a", attempt=1))
    return answers


def recorded(store: Store, run: str) -> dict[str, Any]:
    """What the database holds of the run, without its timestamps' values."""
    with store.engine.connect() as connection:
        nodes = connection.execute(
            select(
                NodeRun.node_id,
                NodeRun.status,
                NodeRun.attempts,
                NodeRun.error,
                NodeRun.output,
                NodeRun.started_at.is_(None),
                NodeRun.finished_at.is_(None),
            )
            .where(NodeRun.job_run_id == run)
            .order_by(NodeRun.node_id)
        ).all()
        journal = connection.execute(
            select(Transition.node_id, Transition.attempt, Transition.status, Transition.error)
            .where(Transition.job_run_id == run)
            .order_by(Transition.id)
        ).all()
        the_run = connection.execute(
            select(
                Run.status, Run.error, Run.started_at.is_(None), Run.finished_at.is_(None)
            ).where(Run.job_run_id == run)
        ).one()
        logs = connection.execute(
            select(LogLine.node_id, LogLine.attempt, LogLine.level, LogLine.message).where(
                LogLine.job_run_id == run
            )
        ).all()
    return {
        "nodes": [tuple(row) for row in nodes],
        "journal": [tuple(row) for row in journal],
        "run": tuple(the_run),
        "logs": [tuple(row) for row in logs],
    }


def test_one_call_and_statement_by_statement_agree_on_every_move(
    stores: tuple[Store, Store],
) -> None:
    one_call, by_statement = stores
    first = start_run(one_call, NODES, EDGES).job_run_id
    second = start_run(by_statement, NODES, EDGES).job_run_id

    script_answers = script(one_call, first)
    assert script_answers == script(by_statement, second)
    assert recorded(one_call, first) == recorded(by_statement, second)
    # And the script did reach the corners it is meant to walk.
    final = recorded(one_call, first)
    assert final["run"][:2] == ("failed", "2 node(s) failed")
    assert ("a", 1, "retrying", "attempt 1 ended without a report (its worker was lost)") in final[
        "journal"
    ]
    assert ("c", 0, "skipped", "upstream node 'b' failed") in final["journal"]
    assert final["logs"] == [("a", 2, "INFO", "hi")]
    released = [a.ready for a in script_answers if isinstance(a, NodeOutcome) and a.ready]
    assert released == [("b", "d"), ("h",)]  # each child named once, by its last parent


def test_a_start_refused_by_a_cancel_agrees(stores: tuple[Store, Store]) -> None:
    answers = []
    for store in stores:
        run = start_run(store, {"x": "noop", "y": "noop"}).job_run_id
        store.start_attempt(job_run_id=run, node_id="x", attempt=1)
        store.request_cancel(job_run_id=run)
        begun = store.start_attempt(job_run_id=run, node_id="y", attempt=1)
        cancelled = store.record_node(job_run_id=run, node_id="x", attempt=1, status=N.CANCELLED)
        answers.append((begun.outcome, begun.spec, cancelled, recorded(store, run)))
    assert answers[0] == answers[1]
    assert answers[0][0].applied is False


def _comparable(view: RunView) -> tuple[Any, ...]:
    """A run view without what differs between two runs: ids and times."""
    nodes = [
        (n.node_id, n.node_type, n.status, n.attempts, n.max_attempts, n.error, n.level)
        for n in view.nodes.values()
    ]
    times = [(n.started_at is None, n.finished_at is None) for n in view.nodes.values()]
    return (
        view.status,
        view.error,
        view.backend,
        view.route,
        view.submitted_at is None,
        nodes,
        times,
    )


@pytest.mark.parametrize("before", ["pending", "a node started", "cancelled"])
def test_creating_and_submitting_agree(stores: tuple[Store, Store], before: str) -> None:
    answers = []
    for store in stores:
        plan = make_plan({"a": "noop", "b": {"type": "noop", "retries": 2}}, {"b": ["a"]})
        route = Route(rule="r1", version="v1", reason="because")
        created = store.create_run(plan=plan, backend="rq", from_job="j0", route=route)
        again = store.create_run(plan=plan, backend="prefect", from_job=None)
        if before == "a node started":
            store.start_attempt(job_run_id=plan.job_run_id, node_id="a", attempt=1)
        elif before == "cancelled":
            store.request_cancel(job_run_id=plan.job_run_id)
        view = store.mark_submitted(job_run_id=plan.job_run_id)
        read = store.get_run(job_run_id=plan.job_run_id)
        assert read is not None
        assert _comparable(view) == _comparable(read)
        answers.append((created, again, _comparable(view), recorded(store, plan.job_run_id)))
    assert answers[0] == answers[1]


def test_submitting_an_unknown_run_is_refused_alike(stores: tuple[Store, Store]) -> None:
    for store in stores:
        with pytest.raises(StoreError, match="no-such-run"):
            store.mark_submitted(job_run_id="no-such-run")


@pytest.mark.parametrize("one_statement", [True, False], ids=["function", "statements"])
def test_a_wide_run_driven_from_many_threads_releases_each_node_once(
    pg_url: str, one_statement: bool
) -> None:
    # Ten nodes a level, three levels, each level waiting for all of the one below:
    # the starts of a level share the run's lock while ends take it alone, and every
    # node must still be named ready exactly once, by the last of its parents to end.
    levels = [[f"l{level}n{i}" for i in range(10)] for level in range(3)]
    nodes = {node: "noop" for level in levels for node in level}
    edges = {node: list(levels[k - 1]) for k in range(1, 3) for node in levels[k]}
    engine = create_database_engine(pg_url, pool_size=12)
    store = Store(engine, one_statement_writes=one_statement)
    run = start_run(store, nodes, edges).job_run_id
    released: list[str] = []
    lock = threading.Lock()

    def attempt(node: str) -> None:
        begun = store.start_attempt(job_run_id=run, node_id=node, attempt=1)
        assert begun.outcome.applied, (node, begun.outcome)
        ended = store.record_node(job_run_id=run, node_id=node, attempt=1, status=N.SUCCEEDED)
        with lock:
            released.extend(ended.ready)

    try:
        for k, level in enumerate(levels):
            with ThreadPoolExecutor(max_workers=10) as pool:
                list(pool.map(attempt, level))
            if k + 1 < len(levels):
                assert sorted(released) == sorted(levels[k + 1]), k
            released.clear()
        view = store.get_run(job_run_id=run)
        assert view is not None
        assert view.status.value == "succeeded"
        assert [status for _, _, status in journal(store, run)].count("running") == 31  # + run
    finally:
        engine.dispose()
