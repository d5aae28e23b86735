"""The worker holds every node to its own policy, whatever the gateway accepted: a
definition stored, or a run accepted, under a looser policy does not run code the
worker's operator did not allow. On real RQ workers and the real Prefect worker.

The gateway here allows ``shutil:copyfile`` by its exact name; the workers (like the
session's Prefect worker) do not. The node would copy a file into the test's folder:
the file must not appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.figway_stack import Stack
from tests.support.policy import TEST_PYTHON_CALLABLES
from tests.support.prefect_services import PrefectServices
from tests.support.prefect_stack import prefect_stack

pytestmark = pytest.mark.service

LOOSER = {"FIGWAY_PYTHON_CALLABLES": TEST_PYTHON_CALLABLES + ",shutil:copyfile"}
REFUSAL = "callable 'shutil:copyfile' is not allowed"


def copy_node(tmp_path: Path) -> tuple[dict[str, object], Path]:
    marker = tmp_path / "copied-by-a-node"
    node = {
        "type": "python",
        "config": {
            "callable": "shutil:copyfile",
            "kwargs": {"src": __file__, "dst": str(marker)},
        },
    }
    return {"copy": node}, marker


def run_and_check(stack: Stack, workflow_id: str, marker: Path, **definition: object) -> None:
    nodes, _ = copy_node(marker.parent)
    stack.put_workflow(workflow_id, nodes, **definition)
    job_run_id = stack.start_run(workflow_id, f"{workflow_id}-1")["job_run_id"]
    run = stack.wait_for_end(job_run_id)
    assert run["status"] == "failed", stack.explain(run["job_run_id"])
    assert REFUSAL in run["nodes"]["copy"]["error"]
    assert not marker.exists(), "the worker ran code its policy does not allow"


def test_an_rq_worker_refuses_code_its_policy_does_not_allow(stack: Stack, tmp_path: Path) -> None:
    stack.gateway.stop()  # type: ignore[union-attr]
    stack.settings.update(LOOSER)
    stack.worker_settings.update({"FIGWAY_PYTHON_CALLABLES": TEST_PYTHON_CALLABLES})
    stack.start_gateway()
    stack.start_workers("policy-worker")
    _, marker = copy_node(tmp_path)
    run_and_check(stack, "policy-rq", marker)


@pytest.fixture
def looser_prefect_gateway(
    upgraded_pg_url: str, redis_url: str, tmp_path: Path, prefect_services: PrefectServices
) -> Iterator[Stack]:
    with prefect_stack(
        database_url=upgraded_pg_url,
        redis_url=redis_url,
        log_dir=tmp_path,
        services=prefect_services,
        settings=LOOSER,
    ) as running:
        yield running


def test_a_prefect_worker_refuses_code_its_policy_does_not_allow(
    looser_prefect_gateway: Stack, tmp_path: Path
) -> None:
    _, marker = copy_node(tmp_path)
    run_and_check(looser_prefect_gateway, "policy-prefect", marker, backend="prefect")
