"""The same workflows on RQ and on Prefect, through one production-shaped gateway, end the same.

Each workflow is defined twice, the two definitions differing only in ``backend``; both
runs start together and, once both have ended, every node's status, attempts, output and
error must be equal (the design's promise: node implementations are shared, so the same
workflow produces the same node outputs on either backend). Each case also states the
outcome it expects, so that two backends that are wrong in the same way still fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.prefect_services import PrefectServices
from tests.support.prefect_stack import PrefectStack, prefect_stack
from tests.support.services import flushed_redis

pytestmark = pytest.mark.service

# The same Redis database as tests/conftest.py's `redis_url`; the gateway and RQ worker
# here serve the whole module, so the database is flushed around the module instead.
RUN_TIMEOUT = 90.0


def python(callable_: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": "python", "config": {"callable": callable_, "kwargs": kwargs}}


CASES: dict[str, dict[str, Any]] = {
    "retry": {
        "nodes": {
            "flaky": {"type": "fail", "config": {"times": 1}, "retries": 2},
            "after_flaky": python("json:loads", s='{"after": "flaky"}'),
        },
        "dependencies": {"after_flaky": ["flaky"]},
        "expected": {
            "status": "succeeded",
            "nodes": {
                "flaky": ("succeeded", 2, {"succeeded_on_attempt": 2}),
                "after_flaky": ("succeeded", 1, {"after": "flaky"}),
            },
        },
    },
    "value": {
        "nodes": {
            "numbers": python("json:loads", s="[1, 2]"),
            "nap": {"type": "sleep", "config": {"seconds": 0.2}},
            "done": {"type": "noop"},
        },
        "dependencies": {"done": ["numbers", "nap"]},
        "expected": {
            "status": "succeeded",
            "nodes": {
                "numbers": ("succeeded", 1, [1, 2]),
                "nap": ("succeeded", 1, {"slept_seconds": 0.2}),
                "done": ("succeeded", 1, None),
            },
        },
    },
    "failure": {
        "nodes": {
            "broken": {"type": "fail", "config": {"message": "the source is gone"}, "retries": 1},
            "after_broken": {"type": "noop"},
            "far_after_broken": {"type": "noop"},
            "independent": {"type": "sleep", "config": {"seconds": 0.2}},
            "after_independent": python("json:loads", s='{"fine": true}'),
        },
        "dependencies": {
            "after_broken": ["broken"],
            "far_after_broken": ["after_broken"],
            "after_independent": ["independent"],
        },
        "expected": {
            "status": "failed",
            "nodes": {
                "broken": ("failed", 2, None),
                "after_broken": ("skipped", 0, None),
                "far_after_broken": ("skipped", 0, None),
                "independent": ("succeeded", 1, {"slept_seconds": 0.2}),
                "after_independent": ("succeeded", 1, {"fine": True}),
            },
        },
    },
}


# Runs of `shadow_*` workflows go to RQ and run again on Prefect, sandboxed, for comparison.
SHADOW_RULES = """\
phase: 1
default: rq
rules:
  - id: shadow-on-prefect
    match: {workflow_id: "shadow_*"}
    backend: rq
    shadow: prefect
"""


@pytest.fixture(scope="module")
def stack(
    upgraded_pg_url: str,
    prefect_services: PrefectServices,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrefectStack]:
    """One gateway and one RQ worker for the module; Prefect's worker is the session's."""
    with (
        flushed_redis() as redis_url,
        prefect_stack(
            database_url=upgraded_pg_url,
            redis_url=redis_url,
            log_dir=tmp_path_factory.mktemp("parity"),
            services=prefect_services,
            rules=SHADOW_RULES,
        ) as running,
    ):
        running.start_workers("parity-rq")
        yield running


def node_facts(run: dict[str, Any]) -> dict[str, tuple[str, int, Any, str | None]]:
    """What must not depend on the backend: (status, attempts, output, error) per node."""
    return {
        node_id: (view["status"], view["attempts"], view["output"], view["error"])
        for node_id, view in run["nodes"].items()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_workflow_ends_the_same_on_rq_and_on_prefect(stack: PrefectStack, case: str) -> None:
    spec = CASES[case]
    runs = {}
    for backend in ("rq", "prefect"):
        workflow_id = f"parity_{case}_{backend}"
        stack.put_workflow(workflow_id, spec["nodes"], spec["dependencies"], backend=backend)
        job_run_id = f"parity-{backend}-{uuid.uuid4().hex[:10]}"
        stack.start_run(workflow_id, job_run_id)
        runs[backend] = job_run_id

    ended = {
        backend: stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)
        for backend, job_run_id in runs.items()
    }

    context = "\n\n".join(stack.explain(job_run_id) for job_run_id in runs.values())
    assert {b: run["backend"] for b, run in ended.items()} == {"rq": "rq", "prefect": "prefect"}
    rq, prefect = (node_facts(ended[b]) for b in ("rq", "prefect"))
    differences = {
        node: {"rq": rq.get(node), "prefect": prefect.get(node)}
        for node in sorted(set(rq) | set(prefect))
        if rq.get(node) != prefect.get(node)
    }
    assert not differences, f"the backends disagree on nodes: {differences}\n{context}"
    assert ended["rq"]["status"] == ended["prefect"]["status"], context
    # Both equal, and both right.
    expected = spec["expected"]
    assert ended["prefect"]["status"] == expected["status"], context
    assert {n: facts[:3] for n, facts in prefect.items()} == expected["nodes"], context


@pytest.mark.parametrize("case", ["retry", "failure"])
def test_a_shadow_run_on_prefect_matches_its_run_on_rq(stack: PrefectStack, case: str) -> None:
    """The routing path of the same promise: one run on RQ, its shadow on Prefect, compared."""
    spec = CASES[case]
    workflow_id = f"shadow_{case}"
    # json.loads writes nothing: declaring so is what lets the workflow be shadowed.
    nodes = {
        node_id: {**node, "config": {**node["config"], "side_effects": "none"}}
        if node["type"] == "python"
        else node
        for node_id, node in spec["nodes"].items()
    }
    stack.put_workflow(workflow_id, nodes, spec["dependencies"])
    job_run_id = f"shadowed-{uuid.uuid4().hex[:10]}"
    started = stack.start_run(workflow_id, job_run_id)
    assert started["backend"] == "rq"
    assert started["routing"]["rule"] == "shadow-on-prefect"
    assert started["routing"]["reason"].endswith("shadowed on prefect")

    ended = stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)
    context = stack.explain(job_run_id)
    shadow = stack.wait_for_end(f"{job_run_id}~shadow", timeout=RUN_TIMEOUT)
    assert ended["status"] == spec["expected"]["status"], context
    assert (shadow["backend"], shadow["status"]) == ("prefect", ended["status"]), context
    deadline = time.monotonic() + RUN_TIMEOUT
    while (found := stack.http.get(f"/routing/shadows/{job_run_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"no shadow comparison within {RUN_TIMEOUT} s"
        time.sleep(0.2)
    comparison = found.json()
    assert comparison["matched"] is True, (comparison["mismatches"], context)
    stats = stack.http.get("/workflow_runs/stats").json()
    assert stats["by_workflow"][workflow_id]["total"] == 1, "the shadow is not the client's run"
