"""How Prefect's state types read as figway run statuses."""

from __future__ import annotations

from prefect.client.schemas.objects import StateType

from backends.model.status import RunStatus

__all__ = ["PREFECT_TO_RUN_STATUS"]

#: Every Prefect state type, as the run status it means. CRASHED (the flow-run
#: process died) and PAUSED (figway never pauses) both end a figway run failed.
PREFECT_TO_RUN_STATUS: dict[StateType, RunStatus] = {
    StateType.SCHEDULED: RunStatus.QUEUED,
    StateType.PENDING: RunStatus.QUEUED,
    StateType.RUNNING: RunStatus.RUNNING,
    StateType.COMPLETED: RunStatus.SUCCEEDED,
    StateType.FAILED: RunStatus.FAILED,
    StateType.CRASHED: RunStatus.FAILED,
    StateType.PAUSED: RunStatus.FAILED,
    StateType.CANCELLING: RunStatus.CANCELLING,
    StateType.CANCELLED: RunStatus.CANCELLED,
}
