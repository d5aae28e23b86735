"""A migration in progress, for the tests of ``figway status`` and the console: routing
rules that send workflows to both backends, and finished runs on each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.api_client import definition, start, unique, wait_for, wait_for_run
from tests.support.rules import PREFECT_AND_SHADOW_RULES

__all__ = ["MigrationRuns", "run_on_both_backends", "write_rules"]

NODES = {"first": {"type": "noop"}, "second": {"type": "noop"}, "last": {"type": "noop"}}
DEPENDENCIES = {"last": ["first", "second"]}


@dataclass(frozen=True)
class MigrationRuns:
    """What was run: ``compared`` ran ``per_backend`` times on each backend (one
    workflow id, so it is compared side by side); ``shadowed`` ran once on RQ with a
    shadow on Prefect, and the two were compared."""

    compared: str
    shadowed: str
    per_backend: int
    run_ids: list[str]


def write_rules(directory: Path) -> Path:
    """The shared test rules (pf-* to Prefect, shadow-* shadowed, stepped-* in steps)."""
    path = directory / "routing_rules.yaml"
    path.write_text(PREFECT_AND_SHADOW_RULES)
    return path


def _put(definer: httpx.Client, workflow_id: str, **extra: str) -> None:
    body = definition(workflow_id, NODES, DEPENDENCIES, **extra)
    response = definer.put(f"/workflows/{workflow_id}", json=body)
    assert response.status_code in (200, 201), response.text


def run_on_both_backends(
    client: httpx.Client,
    admin: httpx.Client,
    *,
    definer: httpx.Client | None = None,
    per_backend: int = 3,
) -> MigrationRuns:
    """Finished runs of one workflow on each backend (its definition pins the backend,
    which is decided before any rule: first rq, then prefect) and one shadowed run,
    waited for until its shadow comparison is recorded. ``client`` starts runs,
    ``admin`` reads routing, ``definer`` defines workflows (default: ``client``)."""
    definer = definer or client
    compared, shadowed = unique("cmp"), unique("shadow")
    run_ids = []
    for backend in ("rq", "prefect"):
        _put(definer, compared, backend=backend)
        for _ in range(per_backend):
            run = start(client, compared)
            assert run["backend"] == backend, run
            run_ids.append(run["job_run_id"])
    _put(definer, shadowed)
    shadow_run = start(client, shadowed)["job_run_id"]
    run_ids.append(shadow_run)
    for run_id in run_ids:
        assert wait_for_run(client, run_id)["status"] == "succeeded", run_id
    wait_for(
        lambda: admin.get(f"/routing/shadows/{shadow_run}").status_code,
        lambda code: code == 200,
        f"the shadow comparison of {shadow_run}",
    )
    return MigrationRuns(
        compared=compared, shadowed=shadowed, per_backend=per_backend, run_ids=run_ids
    )
