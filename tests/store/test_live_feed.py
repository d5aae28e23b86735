"""The live feed: every transition of a followed run, in order, once, to each follower."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from backends.nodes import default_registry
from backends.runtime.attempts import NodeRuntime
from backends.store import Store
from backends.store.journal import Journal
from gateway.live.feed import OVERFLOW, RunFeed
from tests.support.plans import start_run

pytestmark = pytest.mark.filterwarnings("error")


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    messages = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    return messages


def facts(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["type"], m["node_id"], m["status"], m["attempt"]) for m in messages]


async def settle() -> None:
    """Let the callbacks the feed scheduled on this loop run."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_followers_get_each_transition_after_their_snapshot_in_order(store: Store) -> None:
    runtime = NodeRuntime(store, default_registry(), heartbeat_seconds=0.05)
    journal = Journal(store.engine)

    async def scenario() -> None:
        plan = start_run(
            store,
            {"first": {"type": "fail", "config": {"times": 1}, "retries": 1}, "then": "noop"},
            {"then": ["first"]},
        )
        feed = RunFeed(journal, poll_seconds=60)
        early = feed.follow(plan.job_run_id, after_id=0)
        runtime.execute(job_run_id=plan.job_run_id, node_id="first", attempt=1)
        feed.read_once()
        await settle()
        # A second follower joins half-way: it gets only what follows its snapshot.
        late = feed.follow(plan.job_run_id, after_id=journal.last_id(job_run_id=plan.job_run_id))
        runtime.execute(job_run_id=plan.job_run_id, node_id="first", attempt=2)
        runtime.execute(job_run_id=plan.job_run_id, node_id="then", attempt=1)
        feed.read_once()
        feed.read_once()  # nothing new: nothing sent twice
        await settle()

        seen_early, seen_late = drain(early.queue), drain(late.queue)
        assert facts(seen_early) == [
            ("run", None, "pending", 0),
            ("run", None, "queued", 0),  # start_run's submission
            ("node", "first", "queued", 0),
            ("node", "then", "queued", 0),
            ("node", "first", "running", 1),
            ("run", None, "running", 0),
            ("node", "first", "retrying", 1),
            ("node", "first", "running", 2),
            ("node", "first", "succeeded", 2),
            ("node", "then", "running", 1),
            ("node", "then", "succeeded", 1),
            ("run", None, "succeeded", 0),
        ]
        assert facts(seen_late) == facts(seen_early)[-len(seen_late) :]
        assert facts(seen_late)[0] == ("node", "first", "running", 2)
        assert seen_early[-1]["terminal"] is True
        assert {m["backend"] for m in seen_early} == {"rq"}
        assert not any(m["terminal"] for m in seen_early[:-1])

    asyncio.run(scenario())


def test_the_order_of_the_journal_is_kept_against_a_naive_reading(store: Store) -> None:
    """Messages are exactly the journal's rows after the follower's position."""
    runtime = NodeRuntime(store, default_registry(), heartbeat_seconds=0.05)
    journal = Journal(store.engine)

    async def scenario() -> None:
        plan = start_run(store, {"a": "noop", "b": "noop", "c": "noop"}, {"c": ["a", "b"]})
        feed = RunFeed(journal, poll_seconds=60)
        follower = feed.follow(plan.job_run_id, after_id=2)
        for node in ("b", "a", "c"):
            runtime.execute(job_run_id=plan.job_run_id, node_id=node, attempt=1)
        feed.read_once()
        await settle()
        expected = [
            (e.node_id, e.status, e.attempt)
            for e in journal.since(job_run_id=plan.job_run_id, after_id=2)
        ]
        assert [(m["node_id"], m["status"], m["attempt"]) for m in drain(follower.queue)] == (
            expected
        )

    asyncio.run(scenario())


def test_a_follower_too_far_behind_is_cut_off_and_others_are_not(store: Store) -> None:
    journal = Journal(store.engine)

    async def scenario() -> None:
        plan = start_run(store, {f"n{i}": "noop" for i in range(8)})
        feed = RunFeed(journal, poll_seconds=60, buffer=3)
        slow = feed.follow(plan.job_run_id, after_id=0)
        reader = feed.follow(plan.job_run_id, after_id=0)
        feed.read_once()
        await settle()
        assert drain(slow.queue)[-1] is OVERFLOW
        assert slow.cut_off
        # The other follower read as it went: one batch of 3 at a time never fills it.
        assert len(facts(drain(reader.queue)[:3])) == 3

    asyncio.run(scenario())


def test_unfollowing_stops_delivery_and_forgets_the_run(store: Store) -> None:
    runtime = NodeRuntime(store, default_registry(), heartbeat_seconds=0.05)
    journal = Journal(store.engine)

    async def scenario() -> None:
        plan = start_run(store, {"a": "noop"})
        feed = RunFeed(journal, poll_seconds=60)
        follower = feed.follow(plan.job_run_id, after_id=0)
        feed.unfollow(follower)
        runtime.execute(job_run_id=plan.job_run_id, node_id="a", attempt=1)
        assert feed.read_once() == 0
        assert feed.followed() == 0

    asyncio.run(scenario())


@pytest.mark.service
def test_postgresql_notifies_a_listening_gateway_of_each_new_transition(pg_url: str) -> None:
    """The trigger of migration 0005, through the listener every gateway runs."""
    from backends.store import create_database_engine
    from gateway.live.listener import NotificationListener

    engine = create_database_engine(pg_url)
    notified = threading.Event()
    listener = NotificationListener(pg_url, notified.set)
    listener.start()
    try:
        assert listener.connected.wait(10), "the listener did not connect"
        assert not notified.is_set()
        start_run(Store(engine), {"a": "noop"})  # journals: pending, queued
        # A bound on a hang, not a measure: a notification arrives within milliseconds.
        assert notified.wait(10), "no notification after a transition was committed"
    finally:
        listener.stop()
        engine.dispose()
