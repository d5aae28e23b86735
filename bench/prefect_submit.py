"""Submit latency on the Prefect route: what ``POST /workflow_runs/`` costs, and its baselines.

Each *submitter* makes one submission of the small DAG (routed to Prefect)
per call:

- ``figway_http``: ``POST /workflow_runs/`` to ``figway serve``;
- ``figway_inprocess``: figway's ``Dispatcher.start_run`` in this process with
  figway's ``PrefectExecutor``, its store and executor calls timed one by one;
- ``baseline``: what the gateway does on Prefect, without figway: one
  ``INSERT`` into a plain table (as the RQ path's baseline: the legacy system
  kept one row per run) plus ``create_flow_run_from_deployment`` on figway's
  own ``figway-run/figway-default`` deployment, with the arguments figway
  passes (parameters, idempotency key, name, four tags), on one long-lived
  Prefect client;
- ``baseline_prefect_only``: the same Prefect call without the ``INSERT``;
- ``baseline_new_client``: the Prefect call on a new client each time, opened
  and closed around it, as figway's executor does (``get_client`` per submit);
- ``http_floor``: ``GET /healthz``, one HTTP round trip to the gateway.

No worker runs during this part: every flow run it creates stays Scheduled
and is deleted afterwards.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from bench.submit import (
    LEGACY_INSERT,
    FigwayHttp,
    FigwayInProcess,
    HttpFloor,
    SubmitTarget,
    SubmitterFactory,
)
from bench.workflows import FOLDER_ID, WORKSPACE_ID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["BASELINE", "FIGWAY", "prefect_submitters"]

#: The submitters whose p50 ratio is reported (figway's POST over the baseline).
FIGWAY = "figway_http"
BASELINE = "baseline"


def _new_client() -> SyncPrefectClient:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


class PrefectBaseline:
    """``create_flow_run_from_deployment`` as figway calls it, optionally after one INSERT."""

    def __init__(
        self,
        target: SubmitTarget,
        deployment_id: Any,
        *,
        insert: bool,
        client_per_call: bool = False,
    ) -> None:
        self._deployment_id = deployment_id
        self._workflow_id = target.dag.workflow_id
        self._client_per_call = client_per_call
        self._client: SyncPrefectClient | None = None
        if not client_per_call:
            self._client = _new_client().__enter__()
        self._connection = psycopg.connect(target.database_url, autocommit=True) if insert else None
        self._tags = [
            "bench-baseline",
            f"workflow:{self._workflow_id}",
            f"workspace:{WORKSPACE_ID}",
            f"folder:{FOLDER_ID}",
        ]

    def submit(self) -> None:
        run_id = uuid.uuid4().hex
        if self._connection is not None:
            self._connection.execute(
                LEGACY_INSERT, (run_id, self._workflow_id, WORKSPACE_ID, FOLDER_ID, "bench-submit")
            )
        if self._client is not None:
            self._create(self._client, run_id)
        else:
            with _new_client() as client:
                self._create(client, run_id)

    def _create(self, client: SyncPrefectClient, run_id: str) -> None:
        client.create_flow_run_from_deployment(
            self._deployment_id,
            parameters={"job_run_id": run_id},
            idempotency_key=run_id,
            name=run_id,
            tags=self._tags,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
        if self._connection is not None:
            self._connection.close()


def _figway_in_process(target: SubmitTarget) -> FigwayInProcess:
    from backends.prefect.executor import PrefectExecutor

    return FigwayInProcess(target, executor=PrefectExecutor(embedded=False))


def prefect_submitters(deployment_id: Any) -> dict[str, tuple[str, SubmitterFactory]]:
    """Submitter name -> (what it does, how to make one), for ``figway-run/figway-default``."""
    return {
        "figway_http": ("figway: POST /workflow_runs/ (Prefect route)", FigwayHttp),
        "figway_inprocess": (
            "figway: Dispatcher.start_run + PrefectExecutor, in-process (no HTTP)",
            _figway_in_process,
        ),
        "baseline": (
            "baseline: 1 INSERT + create_flow_run_from_deployment",
            lambda target: PrefectBaseline(target, deployment_id, insert=True),
        ),
        "baseline_prefect_only": (
            "baseline: create_flow_run_from_deployment only",
            lambda target: PrefectBaseline(target, deployment_id, insert=False),
        ),
        "baseline_new_client": (
            "baseline: create_flow_run_from_deployment, new client per call",
            lambda target: PrefectBaseline(
                target, deployment_id, insert=False, client_per_call=True
            ),
        ),
        "http_floor": ("HTTP floor: GET /healthz", HttpFloor),
    }
