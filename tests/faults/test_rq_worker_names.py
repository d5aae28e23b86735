"""A worker killed outright leaves its name to the next worker at once (issue 13, defect 6).

RQ refused a worker whose name a dead one's record still held ("There exists an
active worker named ...") until that record expired. figway's worker takes such
a record over when its owner is gone, and refuses only when it is alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from redis import Redis
from rq.utils import now, utcformat

from backends.rq.worker import WorkerNameTakenError, build_worker, worker_redis
from tests.support.faults import OwnRedis

pytestmark = pytest.mark.service


@pytest.fixture
def redis(own_redis: OwnRedis) -> Iterator[Redis]:
    client = worker_redis(own_redis.url(3))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def leave_record(redis: Redis, name: str, *, host: str, pid: int, silent_for: float) -> None:
    """What a worker killed outright leaves: its hash, no death, in rq:workers."""
    beat = utcformat(now() - timedelta(seconds=silent_for))
    redis.hset(
        f"rq:worker:{name}",
        mapping={"pid": pid, "hostname": host, "last_heartbeat": beat, "birth": beat},
    )
    redis.sadd("rq:workers", f"rq:worker:{name}")


def test_a_dead_namesake_on_another_host_is_taken_over(redis: Redis) -> None:
    leave_record(redis, "shared-name", host="another-host", pid=1, silent_for=120)
    worker = build_worker(redis, ["default"], name="shared-name")
    worker.register_birth()
    assert redis.hget("rq:worker:shared-name", "hostname") != b"another-host"
    worker.register_death()


def test_a_live_namesake_keeps_its_name(redis: Redis) -> None:
    leave_record(redis, "shared-name", host="another-host", pid=1, silent_for=1)
    worker = build_worker(redis, ["default"], name="shared-name")
    with pytest.raises(WorkerNameTakenError, match="runs already"):
        worker.register_birth()
