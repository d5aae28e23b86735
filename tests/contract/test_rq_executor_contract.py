"""The executor contract run against the RQ backend: embedded (fakeredis, threads, SQLite)
and production-shaped (real Redis, real PostgreSQL, two ``figway worker rq`` processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from backends.model.workflow import POOLS, RunPlan
from backends.nodes import default_registry
from backends.rq.embedded import EmbeddedWorkers
from backends.rq.executor import RQExecutor
from backends.rq.jobs import FIGWAY_RELEASES, RQ_RELEASES, job_id_for
from backends.runtime.attempts import NodeRuntime
from backends.runtime.bootstrap import install_runtime
from backends.store import Store, create_database_engine, upgrade
from tests.contract.executor_contract import ExecutorContract, ExecutorHarness
from tests.support.processes import LoggedProcess
from tests.support.rq_workers import log_tails, start_workers, stop_workers
from tests.support.services import REDIS_TEST_URL, empty_tables

# The same Redis database as tests/conftest.py's `redis_url`; the workers here live for a
# whole class, so this suite cleans around each test itself instead of flushing the database.

#: Redis keys that belong to the running workers, not to any test's runs.
_WORKER_KEYS = ("rq:worker", "rq:scheduler-lock:", "rq:pubsub:")


class RQContract(ExecutorContract):
    """The contract plus RQ's own leftovers: no job of a finished run still queued or waiting."""

    def leftovers(self, harness: ExecutorHarness, plan: RunPlan) -> list[str]:
        executor = harness.executor
        assert isinstance(executor, RQExecutor)
        redis = executor.redis
        node_of = {job_id_for(plan.job_run_id, node_id): node_id for node_id in plan.nodes}
        found = []
        for pool in POOLS:
            places = {
                "queue": Queue(pool, connection=redis).get_job_ids(),
                "deferred registry": DeferredJobRegistry(pool, connection=redis).get_job_ids(
                    cleanup=False
                ),
                "scheduled registry": ScheduledJobRegistry(pool, connection=redis).get_job_ids(
                    cleanup=False
                ),
                "started registry": StartedJobRegistry(pool, connection=redis).get_job_ids(
                    cleanup=False
                ),
            }
            found.extend(
                f"{node_of[job_id]} in the {pool!r} {place}"
                for place, job_ids in places.items()
                for job_id in job_ids
                if job_id in node_of
            )
        return found


class TestRQEmbedded(RQContract):
    """RQ as the embedded default runs it: fakeredis, worker threads, SQLite."""

    #: Who starts ready nodes (backends/rq/jobs.py).
    release = FIGWAY_RELEASES

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ExecutorHarness]:
        engine = create_database_engine(f"sqlite:///{tmp_path / 'figway.db'}")
        upgrade(engine)
        store = Store(engine)
        install_runtime(NodeRuntime(store, default_registry(), heartbeat_seconds=0.2))
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        workers = EmbeddedWorkers(redis, POOLS, count=4)
        workers.start()
        try:
            yield ExecutorHarness(
                RQExecutor(redis, release=self.release), store, slots=workers.count
            )
        finally:
            workers.stop()
            install_runtime(None)
            engine.dispose()


def _forget_jobs(redis: Redis) -> None:
    """Delete every job, queue and registry key, keeping the workers' own registration."""
    doomed = [
        key
        for key in redis.scan_iter("rq:*", count=1_000)
        if not key.decode().startswith(_WORKER_KEYS)
    ]
    if doomed:
        redis.delete(*doomed)


@pytest.fixture(scope="class")
def rq_workers(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LoggedProcess]]:
    """Two forking `figway worker rq` processes on the real Redis and PostgreSQL, per class."""
    redis = Redis.from_url(REDIS_TEST_URL)
    try:
        redis.flushdb()
    except RedisConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL} ({exc}); run `make services`")
    settings = {
        "FIGWAY_DATABASE_URL": pg_url,
        "FIGWAY_REDIS_URL": REDIS_TEST_URL,
        "FIGWAY_HEARTBEAT_SECONDS": "0.5",
    }
    workers = start_workers(
        2, settings=settings, redis_url=REDIS_TEST_URL, log_dir=tmp_path_factory.mktemp("workers")
    )
    try:
        yield workers
    finally:
        stop_workers(workers)
        redis.flushdb()
        redis.close()


@pytest.mark.service
class TestRQEmbeddedReleasedByRQ(TestRQEmbedded):
    """The same, with RQ's ``depends_on`` starting ready nodes (FIGWAY_RQ_RELEASE=rq)."""

    release = RQ_RELEASES


class TestRQOnRealServices(RQContract):
    """RQ in production shape: Redis, PostgreSQL and two forking `figway worker rq` processes."""

    @pytest.fixture
    def harness(self, pg_url: str, rq_workers: list[LoggedProcess]) -> Iterator[ExecutorHarness]:
        engine = create_database_engine(pg_url)
        redis = Redis.from_url(REDIS_TEST_URL)
        empty_tables(engine)
        _forget_jobs(redis)
        try:
            yield ExecutorHarness(
                RQExecutor(redis),
                Store(engine),
                slots=len(rq_workers),
                worker_logs=lambda: log_tails(rq_workers),
            )
        finally:
            _forget_jobs(redis)
            empty_tables(engine)
            engine.dispose()
            redis.close()
