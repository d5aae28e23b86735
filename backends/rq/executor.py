"""The legacy backend: one RQ job per node.

By default a run is submitted with the jobs of its root nodes, and the job
that makes nodes ready enqueues theirs (``release="figway"``, see
:mod:`backends.rq.jobs`), so one level's nodes run in parallel on as many
workers as there are. With ``release="rq"`` every job is enqueued at
submission in one pipeline, in level order, and RQ defers each until its
upstream jobs finished. RQ leaves the dependents of a failed job deferred
forever, so the job function drops them itself when a node fails for good,
and :meth:`reconcile` does it for nodes whose work horse died without a word.

figway's database is the record; Redis only carries the work. When a run has
been quiet, :meth:`reconcile` lines RQ's jobs up with that record again
(:meth:`RQExecutor._resync`): a node figway has not ended whose upstream nodes
all succeeded must have a job that can still run, and gets one if it has not
(missing after Redis lost its data, failed or deferred though figway did not
fail it, parked ready-to-enqueue); a node figway ended holds no waiting job.
So a Redis restart, flush or outage delays runs and loses none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError, ResponseError
from rq import Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import EnqueueData
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import BaseWorker

from backends.contract import BackendHealth, NodeReport
from backends.model.errors import BackendUnavailableError
from backends.model.status import NODE_TERMINAL, NodeStatus
from backends.model.workflow import POOLS, RunPlan
from backends.rq.jobs import (
    FIGWAY_RELEASES,
    RELEASES,
    RQ_RELEASES,
    drop_jobs,
    job_id_for,
    node_job,
)
from backends.rq.recovery import release_abandoned
from backends.rq.serialization import JOB_SERIALIZER

__all__ = ["NodeStates", "RQExecutor"]

log = logging.getLogger(__name__)

#: Reads figway's record of a run's nodes: node id -> (status, attempts started).
NodeStates = Callable[[str], Mapping[str, tuple[NodeStatus, int]]]
#: RQ statuses of a job that will still run by itself (given a live worker).
_WILL_RUN = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RATE_LIMITED)
#: RQ statuses of a job waiting for something: dropped when figway ended its node.
_WAITING = (
    JobStatus.CREATED,
    JobStatus.DEFERRED,
    JobStatus.READY_TO_ENQUEUE,
    JobStatus.QUEUED,
    JobStatus.SCHEDULED,
    JobStatus.RATE_LIMITED,
)


class RQExecutor:
    """figway's RQ backend. ``redis`` may be a real Redis or the embedded fakeredis."""

    name = "rq"

    def __init__(
        self,
        redis: Redis,
        *,
        job_timeout_seconds: int = 6 * 3_600,
        worker_silence: timedelta = timedelta(seconds=60),
        node_states: NodeStates | None = None,
        release: str = FIGWAY_RELEASES,
    ) -> None:
        if release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, not {release!r}")
        self.redis = redis
        #: Who starts a node once its upstream nodes succeeded (:mod:`backends.rq.jobs`).
        self.release = release
        self.job_timeout_seconds = job_timeout_seconds
        self.worker_silence = worker_silence
        #: figway's record of each node; without it a quiet run is only checked, not repaired.
        self.node_states = node_states

    def queue(self, pool: str) -> Queue:
        return Queue(
            pool,
            connection=self.redis,
            default_timeout=self.job_timeout_seconds,
            serializer=JOB_SERIALIZER,
        )

    def _job_data(
        self, plan: RunPlan, node_id: str, *, attempts_done: int = 0, after_upstream: bool = True
    ) -> EnqueueData:
        """The RQ job of a node; with RQ releasing, it waits on its upstream jobs."""
        waits = after_upstream and self.release == RQ_RELEASES
        return node_job(
            job_run_id=plan.job_run_id,
            workflow_id=plan.workflow_id,
            node_id=node_id,
            spec=plan.nodes[node_id],
            release=self.release,
            attempts_done=attempts_done,
            depends_on=[job_id_for(plan.job_run_id, up) for up in plan.upstream[node_id]]
            if waits
            else (),
        )

    def _submitted_nodes(self, plan: RunPlan) -> list[str]:
        """The nodes whose jobs a submission enqueues: all of them when RQ releases the
        others, the root nodes when figway does."""
        order = [node_id for level in plan.levels() for node_id in level]
        if self.release == RQ_RELEASES:
            return order
        return [node_id for node_id in order if not plan.upstream[node_id]]

    def submit(self, plan: RunPlan) -> None:
        """Enqueue the run's jobs; a repeated submission adds only the jobs Redis lacks."""
        queue = self.queue(plan.pool)
        order = self._submitted_nodes(plan)
        try:
            # A gateway that stopped mid-submit may have written some jobs, which may be
            # running: those are left alone. This read is also the probe that tells "Redis
            # is down, nothing written" (safe to send the run elsewhere) from a failure
            # part-way through writing the jobs (not safe).
            with self.redis.pipeline(transaction=False) as pipeline:
                for node_id in order:
                    pipeline.exists(Job.key_for(job_id_for(plan.job_run_id, node_id)))
                held = pipeline.execute()
        except RedisError as exc:
            raise BackendUnavailableError(
                self.name, f"Redis is unreachable: {exc}", may_have_started=False
            ) from exc
        try:
            job_datas = [self._job_data(plan, n) for n, h in zip(order, held, strict=True) if not h]
            # No pipeline of our own: given one, RQ checks dependencies against jobs not yet
            # written and starts a multi-parent node at once. Without one it saves every job
            # first, then registers each dependent under WATCH.
            if job_datas:
                queue.enqueue_many(job_datas)
        except RedisError as exc:
            raise BackendUnavailableError(self.name, f"Redis refused the run: {exc}") from exc

    def cancel(self, plan: RunPlan) -> None:
        job_ids = [job_id_for(plan.job_run_id, node_id) for node_id in plan.nodes]
        try:
            jobs = Job.fetch_many(job_ids, connection=self.redis, serializer=JOB_SERIALIZER)
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
        """Redis answers; ``unserved`` names the queues holding jobs no live worker takes.

        A queue counts as holding work when jobs wait on it or retries are scheduled
        for it (those need a worker's scheduler); a worker is live when it
        heartbeat within the silence window (RQ lists dead ones for a while).
        """
        try:
            self.redis.ping()
            live = [w for w in Worker.all(connection=self.redis) if self._heard_from(w)]
            served = {name for w in live for name in w.queue_names()}
            queued = {pool: self.queue(pool).count for pool in POOLS}
            unserved: list[str] = []
            details: list[str] = []
            for pool in POOLS:
                waiting = queued[pool] + ScheduledJobRegistry(queue=self.queue(pool)).count  # type: ignore[no-untyped-call]
                if waiting and pool not in served:
                    unserved.append(pool)
                    details.append(f"queue {pool!r} holds {waiting} job(s) and no live worker")
        except RedisError as exc:
            return BackendHealth(self.name, up=False, detail=f"Redis unreachable: {exc}")
        return BackendHealth(
            self.name,
            up=True,
            detail="; ".join(details),
            workers=len(live),
            queued=queued,
            unserved=tuple(unserved),
        )

    def agree_with_record(self) -> None:
        """Nothing beyond single runs: :meth:`reconcile` lines each quiet run's jobs up
        with figway's record (:meth:`_resync`)."""

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
        """A quiet run: line RQ's jobs up with figway's record (see the module docstring)."""
        if self.node_states is not None:
            self._resync(plan, self.node_states(plan.job_run_id))
            return []
        # No record to go by: the run is lost only when RQ holds nothing that can still run.
        jobs = Job.fetch_many(
            [job_id_for(plan.job_run_id, node_id) for node_id in plan.nodes],
            connection=self.redis,
            serializer=JOB_SERIALIZER,
        )
        done = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
        if any(job is not None and job.get_status() not in done for job in jobs):
            return []
        reason = f"RQ holds no job of this run that can still run ({self._redis_uptime()})"
        return [NodeReport("", 0, NodeStatus.FAILED, reason, run_lost=True)]

    def _resync(self, plan: RunPlan, states: Mapping[str, tuple[NodeStatus, int]]) -> None:
        order = [node_id for level in plan.levels() for node_id in level]
        fetched = Job.fetch_many(
            [job_id_for(plan.job_run_id, node_id) for node_id in order],
            connection=self.redis,
            serializer=JOB_SERIALIZER,
        )
        jobs = dict(zip(order, fetched, strict=True))
        fixes: list[str] = []
        for node_id in order:
            status, attempts = states[node_id]
            job = jobs[node_id]
            held = job.get_status() if job is not None else None
            if status in NODE_TERMINAL:
                if status is not NodeStatus.SUCCEEDED and held in _WAITING:
                    drop_jobs(self.redis, [job_id_for(plan.job_run_id, node_id)])
                    fixes.append(f"{node_id} is {status.value}: dropped its {_held(held)}")
                continue
            if not all(states[up][0] is NodeStatus.SUCCEEDED for up in plan.upstream[node_id]):
                # Waiting on upstream nodes. With figway releasing, the last of them to
                # succeed enqueues its job; with RQ, it needs a job that they will release.
                if self.release == FIGWAY_RELEASES:
                    continue
                if job is None or held in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                    self._enqueue_again(plan, node_id, job, attempts, after_upstream=True)
                    fixes.append(f"{node_id} had {_held(held)}: made its job again")
                continue
            if held in _WILL_RUN and job is not None and self._in_its_place(job, held):
                continue
            if held is JobStatus.STARTED and job is not None and self._worker_alive(job):
                continue
            if held is JobStatus.DEFERRED and any(
                self._still_finishing(jobs[up]) for up in plan.upstream[node_id]
            ):
                continue  # an upstream job's worker is recording its end: it releases this one
            if held is JobStatus.READY_TO_ENQUEUE and job is not None:
                ReadyJobRegistry(
                    job.origin, connection=self.redis, serializer=JOB_SERIALIZER
                ).enqueue_jobs([job.id])
                fixes.append(f"{node_id}: released its job parked ready-to-enqueue")
                continue
            self._enqueue_again(plan, node_id, job, attempts, after_upstream=False)
            lost_place = " on no queue" if held in _WILL_RUN else ""
            fixes.append(
                f"{node_id} is {status.value}, its upstream nodes succeeded, and RQ held "
                f"{_held(held, job)}{lost_place}: queued it again"
            )
        if fixes:
            log.warning(
                "run %s: RQ's jobs did not match figway's record (%s): %s",
                plan.job_run_id,
                self._redis_uptime(),
                "; ".join(fixes),
            )

    def _enqueue_again(
        self,
        plan: RunPlan,
        node_id: str,
        old: Job | None,
        attempts_done: int,
        *,
        after_upstream: bool,
    ) -> None:
        """Replace a node's job by a new one (same id), keeping the jobs waiting on it."""
        job_id = job_id_for(plan.job_run_id, node_id)
        waiting_on_it = self.redis.smembers(Job.dependents_key_for(job_id))
        data = self._job_data(
            plan, node_id, attempts_done=attempts_done, after_upstream=after_upstream
        )
        if old is not None:
            old.delete(remove_from_queue=True, delete_dependents=False)
        if not after_upstream:
            # Queued now, so no upstream job may release it again when it ends.
            for up in plan.upstream[node_id]:
                self.redis.srem(Job.dependents_key_for(job_id_for(plan.job_run_id, up)), job_id)
        self.queue(plan.pool).enqueue_many([data])
        if waiting_on_it:
            self.redis.sadd(Job.dependents_key_for(job_id), *waiting_on_it)

    def _in_its_place(self, job: Job, status: JobStatus) -> bool:
        """Whether a queued or scheduled job is really on its queue or schedule.

        A worker that popped a job and died before starting it leaves the job
        ``queued`` on no queue at all (RQ pops jobs of several queues with BLPOP).
        """
        if status is JobStatus.QUEUED:
            return self.redis.lpos(Queue(job.origin, connection=self.redis).key, job.id) is not None
        if status is JobStatus.SCHEDULED:
            key = ScheduledJobRegistry(job.origin, connection=self.redis).key  # type: ignore[no-untyped-call]
            return self.redis.zscore(key, job.id) is not None
        return True

    def _still_finishing(self, job: Job | None) -> bool:
        """A job whose node ended but whose live worker has not recorded it in RQ yet."""
        return job is not None and job.get_status() is JobStatus.STARTED and self._worker_alive(job)

    def _redis_uptime(self) -> str:
        """What Redis says of itself, for reasons: how long it has been up."""
        try:
            uptime = self.redis.info("server").get("uptime_in_seconds")
        except ResponseError:  # a stand-in without INFO (the embedded default's fakeredis)
            uptime = None
        return f"Redis has been up {uptime} s" if uptime is not None else "Redis uptime unknown"

    def _judge(self, plan: RunPlan, node_id: str, attempt: int) -> NodeReport | None:
        lost = f"worker lost during attempt {attempt}"
        try:
            job = Job.fetch(
                job_id_for(plan.job_run_id, node_id),
                connection=self.redis,
                serializer=JOB_SERIALIZER,
            )
        except NoSuchJobError:
            return self._attempt_vanished(plan, node_id, attempt, lost)
        status = job.get_status()
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            return NodeReport(node_id, attempt, NodeStatus.RETRYING, f"{lost}; RQ retries it")
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED):
            why = f"{lost}; RQ marked its job {status.value}"
            failure = _failure_of(job)
            return NodeReport(
                node_id, attempt, NodeStatus.FAILED, f"{why}: {failure}" if failure else why
            )
        if status == JobStatus.STARTED and not self._worker_alive(job):
            return self._recover_abandoned(job, node_id, attempt, lost)
        return None  # still in the hands of a live worker

    def _attempt_vanished(self, plan: RunPlan, node_id: str, attempt: int, lost: str) -> NodeReport:
        """The node's worker went silent and Redis no longer has its job: retry if allowed."""
        why = f"{lost}: its worker stopped reporting and RQ no longer holds its job ({self._redis_uptime()})"
        if attempt < plan.nodes[node_id].retries + 1:
            self._enqueue_again(plan, node_id, None, attempt, after_upstream=False)
            return NodeReport(node_id, attempt, NodeStatus.RETRYING, f"{why}; retried")
        return NodeReport(node_id, attempt, NodeStatus.FAILED, f"{why}; no attempt left")

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


def _held(status: JobStatus | None, job: Job | None = None) -> str:
    """How a reason names what RQ held for a node."""
    if status is None:
        return "no job"
    failure = _failure_of(job) if job is not None else None
    return f"its job {status.value}" + (f" ({failure})" if failure else "")


def _failure_of(job: Job) -> str | None:
    """The last line of RQ's record of why a job failed, if it recorded one."""
    try:
        result = job.latest_result()
    except RedisError:
        raise
    except Exception:  # an unreadable result (another serializer) is no reason to stop
        return None
    text = getattr(result, "exc_string", None) if result is not None else None
    if not text:
        return None
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else None
