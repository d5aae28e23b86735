"""The executor contract: one test suite that every backend behind figway must pass.

Modelled on Prefect's ``testing/standard_test_suites``: :class:`ExecutorContract`
holds the tests and an abstract ``harness`` fixture; each backend subclasses it
in a ``Test...`` class whose ``harness`` fixture yields an
:class:`ExecutorHarness` (the executor under test, a migrated store and
whatever runs its workers). The tests talk to the backend only through the
:class:`~backends.contract.Executor` protocol (``submit``, ``cancel``, ``health``,
``reconcile``) and to the :class:`~backends.store.Store`, exactly as the
gateway does, so RQ and Prefect are held to the same words.

Adding a backend (a module in ``tests/contract/``, which pytest puts on ``sys.path``)::

    from executor_contract import ExecutorContract, ExecutorHarness

    class TestPrefect(ExecutorContract):
        @pytest.fixture
        def harness(self, ...) -> Iterator[ExecutorHarness]:
            ...  # start the workers, yield the harness, stop them

        def leftovers(self, harness, plan):
            ...  # the work the backend still holds for a finished run

Every wait polls with a deadline and fails with the run as JSON and the
worker logs; no test asserts how fast anything was, only in what order.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from backends.contract import Executor
from backends.model.status import RUN_TERMINAL, NodeStatus, RunStatus
from backends.model.workflow import RunPlan
from backends.store import NodeView, RunView, Store
from tests.support.plans import make_plan

__all__ = ["ExecutorContract", "ExecutorHarness"]

#: How long any run of this suite may take before a test gives up on it.
RUN_DEADLINE_SECONDS = 60.0
#: How long a backend may take to let go of a finished run's work.
CLEANUP_DEADLINE_SECONDS = 15.0


@dataclass
class ExecutorHarness:
    """What a backend's ``harness`` fixture hands the suite."""

    executor: Executor
    store: Store
    #: How many node attempts the backend's workers can run at the same time.
    slots: int
    #: The tails of the workers' logs, shown when a test fails.
    worker_logs: Callable[[], str] = lambda: ""


# -- building and following runs -----------------------------------------------------------


def start_run(
    harness: ExecutorHarness,
    nodes: Mapping[str, Mapping[str, Any]],
    dependencies: Mapping[str, list[str]] | None = None,
) -> RunPlan:
    """Record a run and submit it, in the order ``gateway/dispatch/dispatcher.py`` does."""
    plan = make_plan(dict(nodes), dict(dependencies or {}), workflow_id="contract")
    assert harness.store.create_run(plan=plan, backend=harness.executor.name, from_job=None)
    harness.executor.submit(plan)
    harness.store.mark_submitted(job_run_id=plan.job_run_id)
    return plan


def cancel_like_the_gateway(harness: ExecutorHarness, plan: RunPlan) -> RunStatus:
    """The gateway's kill: mark the run cancelling, stop it on the backend, settle the nodes."""
    harness.store.request_cancel(job_run_id=plan.job_run_id)
    harness.executor.cancel(plan)
    return harness.store.complete_cancel(job_run_id=plan.job_run_id)


def read_run(harness: ExecutorHarness, plan: RunPlan) -> RunView:
    run = harness.store.get_run(job_run_id=plan.job_run_id)
    assert run is not None, f"run {plan.job_run_id} vanished from the store"
    return run


def explain(harness: ExecutorHarness, plan: RunPlan) -> str:
    """The run as JSON, and the worker logs: what a failing test prints."""
    run = harness.store.get_run(job_run_id=plan.job_run_id)
    document = dataclasses.asdict(run) if run is not None else None
    text = json.dumps(document, indent=2, default=str)
    logs = harness.worker_logs()
    return f"run {plan.job_run_id}:\n{text}" + (f"\n\nworker logs:\n{logs}" if logs else "")


def wait_until(
    harness: ExecutorHarness,
    plan: RunPlan,
    what: str,
    condition: Callable[[RunView], bool],
    *,
    timeout: float = RUN_DEADLINE_SECONDS,
) -> RunView:
    """Poll the store until ``condition(run)`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(harness, plan)
        if condition(run):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s\n{explain(harness, plan)}")
        time.sleep(0.1)


def wait_for_end(harness: ExecutorHarness, plan: RunPlan) -> RunView:
    return wait_until(harness, plan, "the run finishing", lambda run: run.status in RUN_TERMINAL)


def wait_for_node_running(harness: ExecutorHarness, plan: RunPlan, node_id: str) -> RunView:
    return wait_until(
        harness,
        plan,
        f"node {node_id!r} starting",
        lambda run: run.nodes[node_id].status is NodeStatus.RUNNING,
    )


def interval(node: NodeView) -> tuple[datetime, datetime]:
    assert node.started_at is not None, node
    assert node.finished_at is not None, node
    return node.started_at, node.finished_at


def all_overlap(nodes: list[NodeView]) -> bool:
    """True when some moment lies inside every node's [started_at, finished_at]."""
    intervals = [interval(node) for node in nodes]
    return max(start for start, _ in intervals) < min(end for _, end in intervals)


def never_started(node: NodeView) -> bool:
    return node.started_at is None and node.attempts == 0


def sleep(seconds: float) -> dict[str, Any]:
    return {"type": "sleep", "config": {"seconds": seconds}}


def noop() -> dict[str, Any]:
    return {"type": "noop"}


def returns(**values: Any) -> dict[str, Any]:
    """A python node whose output is ``values`` (``json:loads`` of them)."""
    return {
        "type": "python",
        "config": {"callable": "json:loads", "kwargs": {"s": json.dumps(values)}},
    }


def fails(*, times: int | None = None, retries: int = 0, message: str = "") -> dict[str, Any]:
    config: dict[str, Any] = {"message": message or "node failed on purpose"}
    if times is not None:
        config["times"] = times
    return {"type": "fail", "config": config, "retries": retries}


# -- the suite --------------------------------------------------------------------------------


class ExecutorContract(ABC):
    """The tests every executor must pass. Subclass it and provide ``harness``."""

    @pytest.fixture
    @abstractmethod
    def harness(self) -> Iterator[ExecutorHarness]:
        """The backend under test, its store and its running workers."""

    def leftovers(self, harness: ExecutorHarness, plan: RunPlan) -> list[str]:
        """Work the backend still holds for ``plan`` (a finished run): none, for a clean backend.

        Backends override this with what they can inspect (RQ: its queues and
        registries); each entry names one thing left behind.
        """
        return []

    def assert_nothing_left_behind(self, harness: ExecutorHarness, plan: RunPlan) -> None:
        # The database may record the end of a run a moment before the backend's own
        # bookkeeping settles, so poll instead of looking once.
        deadline = time.monotonic() + CLEANUP_DEADLINE_SECONDS
        while found := self.leftovers(harness, plan):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the backend still holds work of a finished run: {found}\n"
                    f"{explain(harness, plan)}"
                )
            time.sleep(0.1)

    # -- running ---------------------------------------------------------------------

    def test_a_dag_succeeds_with_every_output_stored(self, harness: ExecutorHarness) -> None:
        plan = start_run(
            harness,
            {
                "extract_orders": returns(rows=3, table="orders"),
                "extract_users": sleep(0.1),
                "transform": noop(),
                "load": returns(loaded=True),
            },
            {"transform": ["extract_orders", "extract_users"], "load": ["transform"]},
        )

        run = wait_for_end(harness, plan)

        context = explain(harness, plan)
        assert run.status is RunStatus.SUCCEEDED, context
        assert {n: v.status for n, v in run.nodes.items()} == dict.fromkeys(
            plan.nodes, NodeStatus.SUCCEEDED
        ), context
        assert {n: v.attempts for n, v in run.nodes.items()} == dict.fromkeys(plan.nodes, 1)
        assert {n: v.output for n, v in run.nodes.items()} == {
            "extract_orders": {"rows": 3, "table": "orders"},
            "extract_users": {"slept_seconds": 0.1},
            "transform": None,
            "load": {"loaded": True},
        }, context
        assert run.started_at is not None, context
        assert run.finished_at is not None, context
        self.assert_nothing_left_behind(harness, plan)

    def test_nodes_of_one_level_run_at_the_same_time(self, harness: ExecutorHarness) -> None:
        plan = start_run(harness, {"left": sleep(1), "right": sleep(1)})

        run = wait_for_end(harness, plan)

        assert run.status is RunStatus.SUCCEEDED, explain(harness, plan)
        # An ordering fact, not a speed: run one after the other, they could not overlap.
        assert all_overlap(list(run.nodes.values())), (
            "the two level-0 nodes ran one after the other:\n" + explain(harness, plan)
        )

    def test_a_child_starts_only_after_all_its_parents_finished(
        self, harness: ExecutorHarness
    ) -> None:
        plan = start_run(
            harness,
            {
                "slow_parent": sleep(0.5),
                "flaky_parent": fails(times=1, retries=1),
                "quick_parent": noop(),
                "child": noop(),
            },
            {"child": ["slow_parent", "flaky_parent", "quick_parent"]},
        )

        run = wait_for_end(harness, plan)

        context = explain(harness, plan)
        assert run.status is RunStatus.SUCCEEDED, context
        assert run.nodes["flaky_parent"].attempts == 2, context
        child_started = interval(run.nodes["child"])[0]
        for parent in ("slow_parent", "flaky_parent", "quick_parent"):
            parent_finished = interval(run.nodes[parent])[1]
            assert child_started >= parent_finished, f"child started before {parent}:\n{context}"

    def test_a_failed_attempt_is_retried(self, harness: ExecutorHarness) -> None:
        plan = start_run(harness, {"flaky": fails(times=1, retries=2)})

        run = wait_for_end(harness, plan)

        context = explain(harness, plan)
        assert run.status is RunStatus.SUCCEEDED, context
        flaky = run.nodes["flaky"]
        assert (flaky.status, flaky.attempts) == (NodeStatus.SUCCEEDED, 2), context
        assert flaky.output == {"succeeded_on_attempt": 2}, context
        assert flaky.error is None, context

    def test_a_final_failure_skips_downstream_and_lets_other_branches_finish(
        self, harness: ExecutorHarness
    ) -> None:
        plan = start_run(
            harness,
            {
                "broken": fails(message="the source is gone"),
                "after_broken": noop(),
                "far_after_broken": noop(),
                "independent": sleep(0.5),
                "after_independent": returns(fine=True),
            },
            {
                "after_broken": ["broken"],
                "far_after_broken": ["after_broken"],
                "after_independent": ["independent"],
            },
        )

        run = wait_for_end(harness, plan)

        context = explain(harness, plan)
        assert run.status is RunStatus.FAILED, context
        broken = run.nodes["broken"]
        assert (broken.status, broken.attempts) == (NodeStatus.FAILED, 1), context
        assert "the source is gone" in (broken.error or ""), context
        for skipped in ("after_broken", "far_after_broken"):
            assert run.nodes[skipped].status is NodeStatus.SKIPPED, context
            assert never_started(run.nodes[skipped]), context
        assert run.nodes["independent"].status is NodeStatus.SUCCEEDED, context
        assert run.nodes["after_independent"].output == {"fine": True}, context
        self.assert_nothing_left_behind(harness, plan)

    # -- killing ---------------------------------------------------------------------

    def test_cancel_stops_a_running_run(self, harness: ExecutorHarness) -> None:
        plan = start_run(
            harness,
            {"sleeper": sleep(60), "after": noop(), "far_after": noop()},
            {"after": ["sleeper"], "far_after": ["after"]},
        )
        running = wait_for_node_running(harness, plan, "sleeper")
        # A node whose worker is alive is not the backend's to settle.
        live = harness.executor.reconcile(plan, {"sleeper": running.nodes["sleeper"].attempts})
        assert list(live) == [], f"a live node was reported as lost: {live}"

        assert cancel_like_the_gateway(harness, plan) is RunStatus.CANCELLED, explain(harness, plan)

        # The sleeper gave its worker back: a run needing every slot at once runs them together.
        sleepers = {f"parallel_{i}": sleep(2) for i in range(harness.slots)}
        next_plan = start_run(harness, sleepers)
        next_run = wait_for_end(harness, next_plan)
        assert next_run.status is RunStatus.SUCCEEDED, explain(harness, next_plan)
        assert all_overlap(list(next_run.nodes.values())), (
            "a worker slot stayed busy after the cancel:\n"
            + explain(harness, next_plan)
            + "\n\n"
            + explain(harness, plan)
        )

        # Read the killed run only now, so that a late start downstream would have shown.
        run = read_run(harness, plan)
        context = explain(harness, plan)
        assert run.status is RunStatus.CANCELLED, context
        assert {n: v.status for n, v in run.nodes.items()} == dict.fromkeys(
            plan.nodes, NodeStatus.CANCELLED
        ), context
        assert never_started(run.nodes["after"]), context
        assert never_started(run.nodes["far_after"]), context
        self.assert_nothing_left_behind(harness, plan)

    def test_cancel_is_idempotent(self, harness: ExecutorHarness) -> None:
        running = start_run(
            harness, {"sleeper": sleep(60), "after": noop()}, {"after": ["sleeper"]}
        )
        wait_for_node_running(harness, running, "sleeper")
        assert cancel_like_the_gateway(harness, running) is RunStatus.CANCELLED
        harness.executor.cancel(running)  # twice: nothing happens, nothing raises

        finished = start_run(harness, {"only": returns(kept=True)})
        assert wait_for_end(harness, finished).status is RunStatus.SUCCEEDED
        harness.executor.cancel(finished)
        harness.executor.cancel(make_plan({"never_submitted": noop()}))

        after = read_run(harness, finished)
        assert after.status is RunStatus.SUCCEEDED, explain(harness, finished)
        assert after.nodes["only"].output == {"kept": True}, explain(harness, finished)
        assert read_run(harness, running).status is RunStatus.CANCELLED
        self.assert_nothing_left_behind(harness, running)
        self.assert_nothing_left_behind(harness, finished)

    # -- health and logs -------------------------------------------------------------

    def test_health_reports_the_backend_up(self, harness: ExecutorHarness) -> None:
        health = harness.executor.health()

        assert health.backend == harness.executor.name
        assert health.up, f"backend reported down: {health.detail}\n{harness.worker_logs()}"
        if health.workers is not None:
            assert health.workers >= 1, health

    def test_what_a_node_prints_reaches_the_logs(self, harness: ExecutorHarness) -> None:
        # print() called with only `end=` writes exactly that text.
        talk = {
            "type": "python",
            "config": {"callable": "builtins:print", "kwargs": {"end": "hello from a node\n"}},
        }
        plan = start_run(harness, {"talk": talk})

        assert wait_for_end(harness, plan).status is RunStatus.SUCCEEDED, explain(harness, plan)

        lines = [record for _, record in harness.store.logs(job_run_id=plan.job_run_id)]
        printed = [(r.node_id, r.attempt, r.level, r.message) for r in lines]
        assert ("talk", 1, "INFO", "hello from a node") in printed, (
            f"log lines: {printed}\n{explain(harness, plan)}"
        )

    def test_what_a_node_logs_reaches_the_logs(self, harness: ExecutorHarness) -> None:
        warn = {
            "type": "python",
            "config": {"callable": "logging:warning", "kwargs": {"msg": "disk nearly full"}},
        }
        plan = start_run(harness, {"warn": warn})

        assert wait_for_end(harness, plan).status is RunStatus.SUCCEEDED, explain(harness, plan)

        lines = [record for _, record in harness.store.logs(job_run_id=plan.job_run_id)]
        found = [
            r
            for r in lines
            if r.node_id == "warn" and r.level == "WARNING" and "disk nearly full" in r.message
        ]
        assert found, f"log lines: {lines}\n{explain(harness, plan)}"
