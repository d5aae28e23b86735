"""How RQ's job statuses read as figway node statuses."""

from __future__ import annotations

from rq.job import JobStatus

from backends.model.status import NodeStatus

__all__ = ["RQ_TO_NODE_STATUS"]

#: Every RQ job status, as the node status it means. A failed RQ job is a
#: failed node only once no retry is left; the runtime records that itself.
RQ_TO_NODE_STATUS: dict[JobStatus, NodeStatus] = {
    JobStatus.CREATED: NodeStatus.PENDING,
    JobStatus.DEFERRED: NodeStatus.QUEUED,  # waiting on upstream jobs
    JobStatus.SCHEDULED: NodeStatus.RETRYING,  # only retries are scheduled by figway
    JobStatus.READY_TO_ENQUEUE: NodeStatus.QUEUED,  # upstream done, being enqueued
    JobStatus.QUEUED: NodeStatus.QUEUED,
    JobStatus.RATE_LIMITED: NodeStatus.QUEUED,
    JobStatus.STARTED: NodeStatus.RUNNING,
    JobStatus.FINISHED: NodeStatus.SUCCEEDED,
    JobStatus.FAILED: NodeStatus.FAILED,
    JobStatus.STOPPED: NodeStatus.CANCELLED,
    JobStatus.CANCELED: NodeStatus.CANCELLED,
}
