"""The metrics ledger on SQLite and PostgreSQL: each run counted once, whoever folds it,
however often, and the series exported only by the gateway holding the lease."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from backends.model.errors import StoreError
from backends.model.status import RunStatus
from backends.model.workflow import RunPlan
from backends.store import Store
from backends.store.metric_records import FoldedNode, FoldedRun, MetricRecords
from backends.store.models import NodeRun, Run
from backends.store.routing_records import RoutingRecords
from gateway.metrics.ledger import LedgerCollector, MetricsLedger, increments
from tests.support.plans import one_node_workflow

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def test_increments_count_runs_and_fill_the_right_buckets() -> None:
    run = FoldedRun(
        workflow_id="etl",
        backend="prefect",
        status="failed",
        submitted=True,
        ended=True,
        submitted_at=T0,
        started_at=T0 + timedelta(seconds=0.3),
        finished_at=T0 + timedelta(seconds=45.3),
        nodes=(
            FoldedNode("sleep", 3, T0, T0 + timedelta(seconds=2)),
            FoldedNode("noop", 1, T0, T0 + timedelta(milliseconds=4)),
            FoldedNode("noop", 0, None, None),
        ),
    )
    series = '{"backend":"prefect","workflow_id":"etl"}'
    assert increments([run]) == {
        ("figway_runs_submitted_total", series): 1.0,
        ("figway_runs_finished_total", '{"backend":"prefect","outcome":"failed","workflow_id":"etl"}'): 1.0,
        # 0.3 s waits in the 0.5 bucket (non-cumulative), 45 s runs in the 60 bucket.
        ("figway_run_queue_wait_seconds", '{"backend":"prefect","le":"0.5","workflow_id":"etl"}'): 1.0,
        ("figway_run_queue_wait_seconds_sum", series): pytest.approx(0.3),
        ("figway_run_queue_wait_seconds_count", series): 1.0,
        ("figway_run_duration_seconds", '{"backend":"prefect","le":"60.0","workflow_id":"etl"}'): 1.0,
        ("figway_run_duration_seconds_sum", series): pytest.approx(45.0),
        ("figway_run_duration_seconds_count", series): 1.0,
        ("figway_node_retries_total", series): 2.0,
        ("figway_node_duration_seconds", '{"backend":"prefect","le":"2.5","node_type":"sleep"}'): 1.0,
        ("figway_node_duration_seconds_sum", '{"backend":"prefect","node_type":"sleep"}'): 2.0,
        ("figway_node_duration_seconds_count", '{"backend":"prefect","node_type":"sleep"}'): 1.0,
        ("figway_node_duration_seconds", '{"backend":"prefect","le":"0.005","node_type":"noop"}'): 1.0,
        ("figway_node_duration_seconds_sum", '{"backend":"prefect","node_type":"noop"}'): pytest.approx(0.004),
        ("figway_node_duration_seconds_count", '{"backend":"prefect","node_type":"noop"}'): 1.0,
    }  # fmt: skip


def record_runs(store: Store, *, count: int, backend: str = "rq", status: RunStatus) -> None:
    definition = one_node_workflow("etl")
    for _ in range(count):
        job_run_id = f"m-{next(_ids)}"
        plan = RunPlan.from_definition(definition, job_run_id=job_run_id, job_id=job_run_id)
        assert store.create_run(plan=plan, backend=backend, from_job=None)
        with store.engine.begin() as connection:
            connection.execute(
                update(Run)
                .where(Run.job_run_id == job_run_id)
                .values(
                    status=status,
                    submitted_at=T0,
                    started_at=T0 + timedelta(seconds=1),
                    finished_at=T0 + timedelta(seconds=3) if status != RunStatus.RUNNING else None,
                )
            )
            connection.execute(
                update(NodeRun).where(NodeRun.job_run_id == job_run_id).values(attempts=2)
            )


def ledger_of(store: Store, holder: str) -> MetricsLedger:
    return MetricsLedger(
        MetricRecords(store.engine), RoutingRecords(store.engine), lease_seconds=30, holder=holder
    )


def exported(ledger: MetricsLedger) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples a scrape of this gateway's ledger returns."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


FINISHED_OK = ("figway_runs_finished_total", (("backend", "rq"), ("outcome", "succeeded"), ("workflow_id", "etl")))  # fmt: skip
SUBMITTED = ("figway_runs_submitted_total", (("backend", "rq"), ("workflow_id", "etl")))


def test_one_gateway_leads_and_each_run_counts_once_across_rounds_and_takeovers(
    store: Store,
) -> None:
    first, second = ledger_of(store, "gw-1"), ledger_of(store, "gw-2")
    record_runs(store, count=5, status=RunStatus.SUCCEEDED)
    record_runs(store, count=2, status=RunStatus.RUNNING)
    assert first.round() == 7
    assert second.round() == 0
    assert (first.leader, second.leader) == (True, False)
    assert exported(second) == {}, "only the leader exports the ledger's series"
    assert exported(first)[FINISHED_OK] == 5
    assert exported(first)[SUBMITTED] == 7

    assert first.round() == 0, "nothing new: nothing folded twice"
    record_runs(store, count=3, status=RunStatus.SUCCEEDED)
    first.release()  # the leader stops; the other takes over at once and carries on
    assert second.round() == 3
    samples = exported(second)
    assert samples[FINISHED_OK] == 8
    assert samples[SUBMITTED] == 10
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "figway_run_duration_seconds_bucket"
    }
    assert (buckets["1.0"], buckets["2.5"], buckets["+Inf"]) == (0, 8, 8), "cumulative"
    assert samples[("figway_node_retries_total", (("backend", "rq"), ("workflow_id", "etl")))] == 8


@pytest.mark.service
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_gateways_folding_at_once_never_count_a_run_twice(store: Store) -> None:
    """Without the lease (it could lapse mid-round), row locks alone keep counting exact."""
    record_runs(store, count=400, status=RunStatus.FAILED)
    records = [MetricRecords(store.engine) for _ in range(4)]
    folded: list[int] = []

    def fold(mine: MetricRecords) -> None:
        while batch := mine.fold_runs(increments, limit=25):
            folded.append(batch)

    threads = [threading.Thread(target=fold, args=(mine,)) for mine in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(folded) == 400
    totals = {
        (family, tuple(sorted(labels.items()))): value
        for family, labels, value in records[0].totals()
    }
    assert totals[("figway_runs_finished_total", (("backend", "rq"), ("outcome", "failed"), ("workflow_id", "etl")))] == 400  # fmt: skip
    assert (
        totals[("figway_runs_submitted_total", (("backend", "rq"), ("workflow_id", "etl")))] == 400
    )


def test_a_ledger_that_cannot_renew_its_lease_stops_exporting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease that may have lapsed could be another gateway's by now: two exporters
    would count every run twice."""
    record_runs(store, count=2, status=RunStatus.SUCCEEDED)
    ledger = ledger_of(store, "gw-1")
    ledger.round()
    assert exported(ledger)[FINISHED_OK] == 2

    def unreachable(**_: object) -> bool:
        raise StoreError("database error: connection refused")

    monkeypatch.setattr(ledger.records, "hold_lease", unreachable)
    with pytest.raises(StoreError):
        ledger.round()
    assert not ledger.leader
    assert exported(ledger) == {}
