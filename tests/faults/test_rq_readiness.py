"""RQ's health names the queues that hold work no live worker serves (issue 13, defect 1).

`/readyz` said ready with no worker at all, so runs accepted after a Redis outage sat
queued for minutes. The RQ executor's ``health()`` now lists such queues in
``unserved``; `/readyz` answers 503 for them (``gateway/web/routes/health.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends.model.errors import BackendUnavailableError
from backends.rq.executor import RQExecutor
from backends.rq.worker import build_worker, worker_redis
from tests.support.faults import OwnRedis
from tests.support.plans import make_plan

pytestmark = pytest.mark.service


@pytest.fixture
def executor(own_redis: OwnRedis) -> Iterator[RQExecutor]:
    redis = worker_redis(own_redis.url(2))
    redis.flushdb()
    yield RQExecutor(redis)
    redis.flushdb()
    redis.close()


def test_a_queue_with_work_and_no_live_worker_is_unserved(executor: RQExecutor) -> None:
    assert executor.health().unserved == ()  # nothing waits: no worker needed
    executor.submit(make_plan({"a": "noop"}))

    health = executor.health()
    assert health.up
    assert health.unserved == ("default",)
    assert "queue 'default' holds 1 job(s) and no live worker" in health.detail

    worker = build_worker(executor.redis, ["default"], name="readiness-worker")
    worker.register_birth()
    try:
        assert executor.health().unserved == ()
        assert executor.health().workers == 1
    finally:
        worker.register_death()


def test_an_unreachable_redis_is_down(own_redis: OwnRedis) -> None:
    executor = RQExecutor(worker_redis(f"redis://127.0.0.1:{own_redis.port + 1}/0"))
    health = executor.health()
    assert not health.up
    assert "Redis unreachable" in health.detail


def test_a_submission_to_an_unreachable_redis_certainly_wrote_nothing(
    own_redis: OwnRedis,
) -> None:
    # Only such a refusal may send the run to a rule's fallback backend.
    executor = RQExecutor(worker_redis(f"redis://127.0.0.1:{own_redis.port + 1}/0"))
    with pytest.raises(BackendUnavailableError) as refused:
        executor.submit(make_plan({"a": "noop"}))
    assert refused.value.may_have_started is False
    assert "Redis is unreachable" in refused.value.message
