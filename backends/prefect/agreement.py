"""Making Prefect's record agree with figway's after a fault.

figway's database is the record of every run; Prefect's is a view of it that
faults leave behind. A flow-run process that died (killed, or lost while the
server was down) leaves its flow run and task runs Running; task-run state
events sent while the server was away are lost. Nothing in Prefect ever ends
those, so figway does:

- :func:`crash_task_runs`: a dead flow run's unfinished task runs are Crashed
  (the executor calls it when it resumes or loses a run);
- :class:`RecordSweep`: flow runs still Running whose figway run has ended get
  the final state figway recorded, and unfinished task runs of flow runs that
  have ended get Completed (their run succeeded) or Crashed (the difference,
  said in the state's message). Anything is changed only when seen so on two
  sweeps in a row, since a live flow run ends a moment after its last node and
  task-run events arrive seconds late.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import TERMINAL_STATES, State, StateType
from prefect.states import Cancelled, Completed, Crashed, Failed

from backends.model.status import RUN_TERMINAL, RunStatus

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["FINISHED_SWEEP_SECONDS", "RecordSweep", "crash_task_runs"]

log = logging.getLogger(__name__)

#: How often a sweep runs at most (the gateway's upkeep asks every reconcile round).
FINISHED_SWEEP_SECONDS = 15.0
#: Rows one sweep looks at, of each kind; the rest wait for the next sweep.
_SWEEP_LIMIT = 200
_UNFINISHED = [t for t in StateType if t not in TERMINAL_STATES]


def crash_task_runs(client: SyncPrefectClient, flow_run_id: Any, message: str) -> None:
    """Mark a flow run's unfinished task runs Crashed: nothing will finish them."""
    left = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=_UNFINISHED))
        ),
    )
    for task_run in left:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)


class RecordSweep:
    """Ends, in Prefect, what figway's record holds ended (see the module docstring)."""

    def __init__(self, run_status: Callable[[str], RunStatus | None]) -> None:
        self.run_status = run_status
        self._lock = threading.Lock()
        self._last = -math.inf
        # What the last sweep found out of line (flow run or task run ids).
        self._seen: set[Any] = set()

    def due(self) -> bool:
        """Whether the last sweep is :data:`FINISHED_SWEEP_SECONDS` old."""
        return time.monotonic() - self._last >= FINISHED_SWEEP_SECONDS

    def maybe_sweep(self, client: SyncPrefectClient) -> None:
        """Sweep if the last sweep is :data:`FINISHED_SWEEP_SECONDS` old (else nothing)."""
        now = time.monotonic()
        with self._lock:  # one sweep at a time, whoever calls
            if now - self._last < FINISHED_SWEEP_SECONDS:
                return
            self._last = now
            seen, self._seen = self._seen, set()
        self._end_flow_runs(client, seen)
        self._end_task_runs(client, seen)

    def _again(self, seen: set[Any], row_id: Any) -> bool:
        """True when the last sweep saw this row out of line too; remembers it either way."""
        self._seen.add(row_id)
        return row_id in seen

    def _end_flow_runs(self, client: SyncPrefectClient, seen: set[Any]) -> None:
        """Flow runs Running (or Pending) in Prefect whose figway run has ended."""
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["figway"]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                ),
            ),
            limit=_SWEEP_LIMIT,
        )
        for flow_run in running:
            status = self.run_status(flow_run.name)
            if status not in RUN_TERMINAL or not self._again(seen, flow_run.id):
                continue
            said = f"figway: the run ended {status}; its flow-run process never reported it"
            client.set_flow_run_state(flow_run.id, _final_state(status, said), force=True)
            crash_task_runs(client, flow_run.id, "figway: its flow-run process was lost")
            log.warning("Prefect flow run %s of run %s: %s", flow_run.id, flow_run.name, said)

    def _end_task_runs(self, client: SyncPrefectClient, seen: set[Any]) -> None:
        """Unfinished task runs of figway's flow runs that have ended (lost state events)."""
        left = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["figway"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(TERMINAL_STATES))),
            ),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=_UNFINISHED))
            ),
            limit=_SWEEP_LIMIT,
        )
        stale = [t for t in left if self._again(seen, t.id)]
        if not stale:
            return
        flow_run_ids = list({t.flow_run_id for t in stale if t.flow_run_id is not None})
        names: dict[Any, str] = {
            r.id: r.name
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
            )
        }
        for task_run in stale:
            status = self.run_status(names.get(task_run.flow_run_id, ""))
            if status is RunStatus.SUCCEEDED:  # every node of the run succeeded
                state: State[Any] = Completed(message="figway recorded this node succeeded")
            else:
                state = Crashed(
                    message="figway: this task run's state reports were lost; figway's "
                    "record of the run has the node's outcome"
                )
            client.set_task_run_state(task_run.id, state, force=True)


def _final_state(status: RunStatus, message: str) -> State[Any]:
    if status is RunStatus.SUCCEEDED:
        return Completed(message=message)
    if status is RunStatus.CANCELLED:
        return Cancelled(message=message)
    return Failed(message=message)
