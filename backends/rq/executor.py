"""The legacy backend: one RQ job per node, chained with ``depends_on``.

A run's jobs are enqueued in level order in one Redis pipeline; RQ defers
each job until its upstream jobs finished, so one level's nodes run in
parallel on as many workers as there are. RQ leaves the dependents of a
failed job deferred forever, so the job function drops them itself when a
node fails for good (see :mod:`backends.rq.jobs`), and :meth:`reconcile`
does it for nodes whose work horse died without a word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import BaseWorker

from backends.contract import BackendHealth, NodeReport
from backends.model.errors import BackendUnavailableError
from backends.model.status import NodeStatus
from backends.model.workflow import POOLS, RunPlan
from backends.rq.jobs import drop_jobs, job_id_for, run_node
from backends.rq.recovery import FAILURE_TTL, release_abandoned

__all__ = ["RQExecutor"]

#: RQ keeps a finished job's result this long (seconds); figway's database keeps the record.
RESULT_TTL = 3_600


def rq_retry_interval(delay_seconds: float) -> int:
    """RQ's retry interval for a delay, so a retry never runs early.

    RQ schedules in whole seconds and truncates the due time, which can fire a
    retry up to a second before its interval; one more second makes the delay a
    floor (a retry waits ``delay`` to ``delay + 2`` s).

    >>> rq_retry_interval(0), rq_retry_interval(0.4), rq_retry_interval(30)
    (0, 2, 31)
    """
    return math.ceil(delay_seconds) + 1 if delay_seconds > 0 else 0


class RQExecutor:
    """figway's RQ backend. ``redis`` may be a real Redis or the embedded fakeredis."""

    name = "rq"

    def __init__(
        self,
        redis: Redis,
        *,
        job_timeout_seconds: int = 6 * 3_600,
        worker_silence: timedelta = timedelta(seconds=60),
    ) -> None:
        self.redis = redis
        self.job_timeout_seconds = job_timeout_seconds
        self.worker_silence = worker_silence

    def queue(self, pool: str) -> Queue:
        return Queue(pool, connection=self.redis, default_timeout=self.job_timeout_seconds)

    def submit(self, plan: RunPlan) -> None:
        queue = self.queue(plan.pool)
        job_datas = []
        for level in plan.levels():
            for node_id in level:
                spec = plan.nodes[node_id]
                upstream: list[Dependency | Job | str] = [
                    job_id_for(plan.job_run_id, up) for up in plan.upstream[node_id]
                ]
                retry = None
                if spec.retries:
                    retry = Retry(
                        max=spec.retries, interval=rq_retry_interval(spec.retry_delay_seconds)
                    )
                job_datas.append(
                    Queue.prepare_data(
                        run_node,
                        args=(plan.job_run_id, node_id, spec.retries),
                        job_id=job_id_for(plan.job_run_id, node_id),
                        description=f"{plan.workflow_id}/{node_id} (run {plan.job_run_id})",
                        depends_on=upstream or None,
                        retry=retry,
                        result_ttl=RESULT_TTL,
                        failure_ttl=FAILURE_TTL,
                        meta={"job_run_id": plan.job_run_id, "node_id": node_id},
                    )
                )
        try:
            # A ping first tells "Redis is down, nothing written" (safe to send the run
            # elsewhere) from a failure part-way through writing the jobs (not safe).
            self.redis.ping()
        except RedisError as exc:
            raise BackendUnavailableError(
                self.name, f"Redis is unreachable: {exc}", may_have_started=False
            ) from exc
        try:
            # No pipeline of our own: given one, RQ checks dependencies against jobs not yet
            # written and starts a multi-parent node at once. Without one it saves every job
            # first, then registers each dependent under WATCH.
            queue.enqueue_many(job_datas)
        except RedisError as exc:
            raise BackendUnavailableError(self.name, f"Redis refused the run: {exc}") from exc

    def cancel(self, plan: RunPlan) -> None:
        job_ids = [job_id_for(plan.job_run_id, node_id) for node_id in plan.nodes]
        try:
            jobs = Job.fetch_many(job_ids, connection=self.redis)
            # Waiting jobs first, so nothing downstream starts while running ones stop.
            waiting = [j for j in jobs if j is not None and j.get_status() != JobStatus.STARTED]
            for job in waiting:
                try:
                    job.cancel()
                except (InvalidJobOperation, NoSuchJobError):
                    continue
            for maybe_job in jobs:
                if maybe_job is not None and maybe_job.get_status() == JobStatus.STARTED:
                    try:
                        send_stop_job_command(self.redis, maybe_job.id)
                    except (InvalidJobOperation, NoSuchJobError):
                        continue  # finished meanwhile
        except RedisError as exc:
            raise BackendUnavailableError(
                self.name, f"cannot reach Redis to cancel: {exc}"
            ) from exc

    def health(self) -> BackendHealth:
        try:
            self.redis.ping()
            workers = len([w for w in Worker.all(connection=self.redis) if self._heard_from(w)])
            queued = {pool: self.queue(pool).count for pool in POOLS}
        except RedisError as exc:
            return BackendHealth(self.name, up=False, detail=f"Redis unreachable: {exc}")
        return BackendHealth(self.name, up=True, workers=workers, queued=queued)

    def holdings(self) -> dict[str, int]:
        """Jobs RQ still holds, per queue and registry (``default.scheduled``); zeros included.

        Phase 3 switches RQ off only when every figure is zero.
        """
        registries = {
            "deferred": DeferredJobRegistry,
            "scheduled": ScheduledJobRegistry,
            "started": StartedJobRegistry,
            "failed": FailedJobRegistry,
        }
        figures: dict[str, int] = {}
        try:
            for pool in POOLS:
                queue = self.queue(pool)
                figures[f"{pool}.queued"] = queue.count
                for name, registry in registries.items():
                    figures[f"{pool}.{name}"] = registry(queue=queue).count
        except RedisError as exc:
            raise BackendUnavailableError(
                self.name, f"cannot reach Redis to count jobs: {exc}"
            ) from exc
        return figures

    def close(self) -> None:
        """Nothing to release: the Redis connection belongs to whoever built the executor."""

    def reconcile(self, plan: RunPlan, running: Mapping[str, int]) -> Sequence[NodeReport]:
        reports: list[NodeReport] = []
        try:
            if not running:
                return self._judge_quiet_run(plan)
            for node_id, attempt in running.items():
                report = self._judge(plan, node_id, attempt)
                if report is None:
                    continue
                if report.status is NodeStatus.FAILED:
                    drop_jobs(
                        self.redis,
                        (job_id_for(plan.job_run_id, n) for n in plan.downstream_of(node_id)),
                    )
                reports.append(report)
        except RedisError as exc:
            raise BackendUnavailableError(
                self.name, f"cannot reach Redis to reconcile: {exc}"
            ) from exc
        return reports

    def _judge_quiet_run(self, plan: RunPlan) -> list[NodeReport]:
        """A quiet run is lost when none of its jobs can still run (Redis lost them)."""
        jobs = Job.fetch_many(
            [job_id_for(plan.job_run_id, node_id) for node_id in plan.nodes], connection=self.redis
        )
        done = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
        if any(job is not None and job.get_status() not in done for job in jobs):
            return []
        reason = "RQ holds no job of this run that can still run (was Redis flushed or restarted?)"
        return [NodeReport("", 0, NodeStatus.FAILED, reason, run_lost=True)]

    def _judge(self, plan: RunPlan, node_id: str, attempt: int) -> NodeReport | None:
        try:
            job = Job.fetch(job_id_for(plan.job_run_id, node_id), connection=self.redis)
        except NoSuchJobError:
            return NodeReport(
                node_id, attempt, NodeStatus.FAILED, "RQ no longer has this node's job"
            )
        status = job.get_status()
        lost = f"worker lost during attempt {attempt}"
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            return NodeReport(node_id, attempt, NodeStatus.RETRYING, f"{lost}; RQ retries it")
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED):
            return NodeReport(node_id, attempt, NodeStatus.FAILED, f"{lost}; RQ marked it {status}")
        if status == JobStatus.STARTED and not self._worker_alive(job):
            return self._recover_abandoned(job, node_id, attempt, lost)
        return None  # still in the hands of a live worker

    def _worker_alive(self, job: Job) -> bool:
        name = job.worker_name
        if not name:
            return False
        worker = Worker.find_by_key(
            Worker.redis_worker_namespace_prefix + name, connection=self.redis
        )
        return worker is not None and self._heard_from(worker)

    def _heard_from(self, worker: BaseWorker) -> bool:
        """Whether ``worker`` heartbeat within the silence window (RQ keeps dead ones listed)."""
        beat = worker.last_heartbeat
        if beat is None:
            return False
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        return datetime.now(UTC) - beat < self.worker_silence

    def _recover_abandoned(self, job: Job, node_id: str, attempt: int, lost: str) -> NodeReport:
        """The worker and its horse are gone: retry the job if RQ would, else fail it."""
        if release_abandoned(self.redis, job, lost):
            return NodeReport(node_id, attempt, NodeStatus.RETRYING, f"{lost}; retried")
        return NodeReport(node_id, attempt, NodeStatus.FAILED, f"{lost}; no attempt left")
