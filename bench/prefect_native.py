"""The native-Prefect side of the comparison: a plain flow running a DAG of trivial tasks.

:func:`native_dag` schedules exactly as figway's flow (``backends/prefect/flow.py``)
does: a node's task is submitted when all of its upstream tasks are done
(``graphlib.TopologicalSorter`` + ``as_completed``), so one level's tasks run
in parallel in the flow's thread pool. Each task does nothing. No figway code
is imported: this is what the same DAG costs on Prefect alone.

It runs through the same path as figway's runs: a deployment on figway's
``default-worker-pool`` with a module entrypoint (no source storage, no pull
steps), created through the client as ``figway setup prefect`` creates
figway's, and picked up by the same ``prefect worker start`` process. The worker
must find this module: the benchmark puts the checkout on its ``PYTHONPATH``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = [
    "NATIVE_DEPLOYMENT",
    "NATIVE_ENTRYPOINT",
    "NATIVE_FLOW_NAME",
    "ensure_native_deployment",
    "native_dag",
    "noop_task",
    "parameters",
]

NATIVE_FLOW_NAME = "bench-native-dag"
NATIVE_DEPLOYMENT = "bench-native"
#: A module path, as figway's deployments use (``backends.prefect.flow.figway_run``).
NATIVE_ENTRYPOINT = "bench.prefect_native.native_dag"


@task(name="bench-noop", task_run_name="{node_id}", cache_policy=NO_CACHE, persist_result=False)
def noop_task(node_id: str) -> None:
    """Do nothing (the native counterpart of one figway ``noop`` node)."""
    return None


@flow(name=NATIVE_FLOW_NAME, persist_result=False, log_prints=False)
def native_dag(upstream: dict[str, list[str]]) -> None:
    """Run one trivial task per node of ``upstream`` (node -> the nodes it waits for)."""
    order = TopologicalSorter(upstream)
    order.prepare()
    running: dict[PrefectFuture[None], str] = {}
    failed: list[str] = []
    while order.is_active():
        for node_id in order.get_ready():
            running[noop_task.submit(node_id)] = node_id
        finished = next(as_completed(list(running)))
        node_id = running.pop(finished)
        finished.wait()
        if finished.state.is_failed():
            failed.append(node_id)
        order.done(node_id)
    if failed:  # a flow returning None would end Completed whatever its tasks did
        raise RuntimeError(f"task(s) failed: {', '.join(sorted(failed))}")


def parameters(upstream: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The flow-run parameters that run the DAG ``upstream``."""
    return {"upstream": {node: list(ups) for node, ups in upstream.items()}}


def ensure_native_deployment(client: SyncPrefectClient, work_pool_name: str) -> Any:
    """Create (or update) the native flow's deployment on ``work_pool_name``; returns its id."""
    from prefect.utilities.callables import parameter_schema

    flow_id = client.create_flow_from_name(NATIVE_FLOW_NAME)
    # create_deployment upserts on (flow, name).
    return client.create_deployment(
        flow_id=flow_id,
        name=NATIVE_DEPLOYMENT,
        entrypoint=NATIVE_ENTRYPOINT,
        work_pool_name=work_pool_name,
        parameter_openapi_schema=parameter_schema(native_dag).model_dump_for_openapi(),
        enforce_parameter_schema=True,
        description="figway benchmark: the same DAG as plain Prefect tasks, no figway",
        tags=["bench-native"],
    )
