"""RQ jobs are JSON on both ends: what a real gateway writes to Redis, and what a real
`figway worker rq` does with a job that is not JSON (a pickled one, as RQ writes by
default: unpickling it would run whatever its writer chose)."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from pathlib import Path

from redis import Redis
from rq import Queue

from backends.rq.jobs import job_id_for
from backends.rq.serialization import NOT_JSON
from tests.support.figway_stack import Stack


def test_a_run_is_written_to_redis_as_json(stack: Stack) -> None:
    stack.put_workflow("json-jobs", {"only": {"type": "sleep", "config": {"seconds": 30}}})
    job_run_id = uuid.uuid4().hex
    stack.start_run("json-jobs", job_run_id)
    with Redis.from_url(stack.redis_url) as redis:
        data = redis.hget(f"rq:job:{job_id_for(job_run_id, 'only')}", "data")
        meta = redis.hget(f"rq:job:{job_id_for(job_run_id, 'only')}", "meta")
    assert data is not None
    assert meta is not None
    function, _, args, kwargs = json.loads(zlib.decompress(data))  # RQ compresses it
    assert (function, args, kwargs) == ("backends.rq.jobs.run_node", [job_run_id, "only", 0], {})
    assert json.loads(meta) == {
        "job_run_id": job_run_id,
        "node_id": "only",
        "workflow_id": "json-jobs",
        "release": "figway",
    }
    assert stack.http.delete(f"/workflow_runs/{job_run_id}").status_code == 200


def test_a_pickled_job_is_refused_not_executed_and_the_worker_goes_on(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start_workers("json-w1")
    marker = tmp_path / "executed"
    with Redis.from_url(stack.redis_url) as redis:
        # What anyone able to write to Redis could queue: a job RQ pickles by default.
        planted = Queue("default", connection=redis).enqueue(Path.touch, marker)
    deadline = time.monotonic() + 60
    while NOT_JSON not in stack.logs():
        assert time.monotonic() < deadline, f"the worker never refused the job\n{stack.logs()}"
        time.sleep(0.2)
    assert f"job {planted.id}: exception raised while executing (<DeserializationError>)" in (
        stack.logs()
    )
    assert not marker.exists(), "the pickled job was executed"

    # The worker is still there and runs figway's own jobs.
    stack.put_workflow("after-refusal", {"a": {"type": "noop"}})
    job_run_id = uuid.uuid4().hex
    stack.start_run("after-refusal", job_run_id)
    assert stack.wait_for_end(job_run_id)["status"] == "succeeded", stack.explain(job_run_id)
    assert stack.workers["json-w1"].running()
    assert not marker.exists()
