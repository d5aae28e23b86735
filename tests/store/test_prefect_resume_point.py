"""Where a resumed Prefect flow run starts, read from figway's record: nodes done are
skipped, a lost attempt with retries left continues its numbering, a lost last attempt
fails its node with the cause and skips its downstream."""

from __future__ import annotations

from backends.model.status import NodeStatus
from backends.prefect.flow import resume_point
from backends.store import Store
from tests.support.plans import journal, start_run


def test_a_resumed_flow_run_starts_where_figways_record_stands(store: Store) -> None:
    plan = start_run(
        store,
        {
            "done": "noop",
            "lost_with_retries": {"type": "noop", "retries": 2},
            "lost_last_attempt": "noop",
            "below_the_lost": "noop",
            "not_started": "noop",
        },
        {"below_the_lost": ["lost_last_attempt"], "not_started": ["lost_with_retries"]},
    )
    job_run_id = plan.job_run_id
    for node in ("done", "lost_with_retries", "lost_last_attempt"):
        store.record_node(job_run_id=job_run_id, node_id=node, attempt=1, status=NodeStatus.RUNNING)
    store.record_node(job_run_id=job_run_id, node_id="done", attempt=1, status=NodeStatus.SUCCEEDED)
    run = store.get_run(job_run_id=job_run_id)
    assert run is not None

    point = resume_point(store, plan, run)

    assert point.settled == {"done"}
    assert point.failed == ["lost_last_attempt"]
    assert point.doomed == {"below_the_lost"}
    assert point.attempts_before == {"lost_with_retries": 1}
    after = store.get_run(job_run_id=job_run_id)
    assert after is not None
    lost = after.nodes["lost_last_attempt"]
    assert (lost.status, lost.attempts) == (NodeStatus.FAILED, 1)
    assert (
        lost.error
        == "attempt 1 was lost with its Prefect flow-run process, and no retries are left"
    )
    assert after.nodes["below_the_lost"].status is NodeStatus.SKIPPED
    assert after.nodes["lost_with_retries"].status is NodeStatus.RUNNING, "the flow retries it"
    assert ("lost_last_attempt", 1, "failed") in journal(store, job_run_id)


def test_a_resume_of_a_node_already_reported_retrying_continues_its_attempts(store: Store) -> None:
    plan = start_run(store, {"only": {"type": "noop", "retries": 1}})
    job_run_id = plan.job_run_id
    store.record_node(job_run_id=job_run_id, node_id="only", attempt=1, status=NodeStatus.RUNNING)
    # The gateway's reconciler recorded the lost attempt before the new flow run started.
    store.record_node(
        job_run_id=job_run_id, node_id="only", attempt=1, status=NodeStatus.RETRYING, error="lost"
    )
    run = store.get_run(job_run_id=job_run_id)
    assert run is not None

    point = resume_point(store, plan, run)

    assert (point.failed, point.attempts_before) == ([], {"only": 1})
