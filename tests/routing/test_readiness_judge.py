"""Phase 3 readiness asks the judge: RQ is held while Prefect is found worse on a workflow
that ran on both, on SQLite and on PostgreSQL (recorded runs; RQ's queues stubbed empty)."""

from __future__ import annotations

from backends.store import Store
from backends.store.routing_records import RoutingRecords
from gateway.reports.readiness import rq_readiness
from gateway.routing.loading import parse_rules
from gateway.routing.router import RoutingTable
from tests.support.finished_runs import record_runs

PHASE_3 = "phase: 3\ndefault: prefect\nbackends: {rq: {enabled: false}}\n"


class DrainedRQ:
    """RQ with nothing left in its queues and registries."""

    def holdings(self) -> dict[str, int]:
        return {}


def readiness(store: Store) -> tuple[bool, tuple[str, ...], dict[str, object]]:
    records = RoutingRecords(store.engine)
    result = rq_readiness(
        table=RoutingTable(parse_rules(PHASE_3, source="test")),
        workflows=[],
        records=records,
        legacy=DrainedRQ(),  # type: ignore[arg-type]
    )
    return result.ready, result.holds, result.figures


def test_rq_is_held_while_the_judge_finds_prefect_worse(store: Store) -> None:
    record_runs(store, backend="rq", count=60, rule=None, workflow_id="etl")
    record_runs(store, backend="prefect", count=60, failed=30, rule=None, workflow_id="etl")

    ready, holds, figures = readiness(store)

    assert not ready
    (hold,) = holds
    assert hold.startswith("workflow etl: prefect is worse than rq on failure rate (+")
    assert hold.endswith("Switching RQ off would take away the way back")
    judgements = figures["judgements"]
    assert isinstance(judgements, dict)
    assert judgements["etl"]["answer"] == "worse"


def test_a_workflow_not_worse_or_only_on_prefect_holds_nothing(store: Store) -> None:
    record_runs(store, backend="rq", count=30, rule=None, workflow_id="etl")
    record_runs(store, backend="prefect", count=30, rule=None, workflow_id="etl")
    record_runs(store, backend="prefect", count=30, failed=30, rule=None, workflow_id="new")

    ready, holds, figures = readiness(store)

    assert ready, holds
    judgements = figures["judgements"]
    assert isinstance(judgements, dict)
    assert set(judgements) == {"etl"}, "a workflow that never ran on RQ has nothing to judge"
    assert judgements["etl"]["answer"] != "worse"
