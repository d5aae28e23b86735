"""The metrics ledger: finished runs turned into Prometheus series, counted exactly once.

Workers on either backend record runs in the database, not in any gateway's
memory, so the figures come from there. One gateway at a time holds the
``metrics-ledger`` lease (renewed each round, taken over when it lapses). It
folds runs not counted yet into ``metric_totals`` (``MetricRecords.fold_runs``:
the totals and the run's stage move in one transaction), and only it exports
the totals. Summed over every gateway's ``/metrics``, each run counts once;
a gateway that restarts, or a lease that moves, carries on from the totals,
so Prometheus never sees a counter go back.
"""

from __future__ import annotations

import bisect
import logging
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from backends.model.errors import FigwayError
from backends.store.metric_records import FoldedRun, MetricRecords, labels_key
from backends.store.routing_records import RoutingRecords
from gateway.metrics.families import BUCKETS, LEDGER

__all__ = ["LEASE", "LedgerCollector", "MetricsLedger", "increments"]

log = logging.getLogger(__name__)

LEASE = "metrics-ledger"
_INF = "+Inf"


def increments(runs: Iterable[FoldedRun]) -> dict[tuple[str, str], float]:
    """What the runs add to the totals: counters, and histogram buckets with sum and count."""
    added: dict[tuple[str, str], float] = defaultdict(float)

    def count(family: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        added[(family, labels_key(labels))] += amount

    def observe(family: str, labels: Mapping[str, str], seconds: float) -> None:
        seconds = max(seconds, 0.0)
        index = bisect.bisect_left(BUCKETS, seconds)
        le = str(BUCKETS[index]) if index < len(BUCKETS) else _INF
        count(family, {**labels, "le": le})
        count(f"{family}_sum", labels, seconds)
        count(f"{family}_count", labels)

    for run in runs:
        series = {"backend": run.backend, "workflow_id": run.workflow_id}
        if run.submitted:
            count("figway_runs_submitted_total", series)
        if not run.ended:
            continue
        count("figway_runs_finished_total", {**series, "outcome": run.status})
        if run.started_at is not None and run.submitted_at is not None:
            observe(
                "figway_run_queue_wait_seconds", series, _seconds(run.submitted_at, run.started_at)
            )
        if run.started_at is not None and run.finished_at is not None:
            observe(
                "figway_run_duration_seconds", series, _seconds(run.started_at, run.finished_at)
            )
        retries = sum(max(node.attempts - 1, 0) for node in run.nodes)
        if retries:
            count("figway_node_retries_total", series, retries)
        for node in run.nodes:
            if node.started_at is not None and node.finished_at is not None:
                observe(
                    "figway_node_duration_seconds",
                    {"backend": run.backend, "node_type": node.node_type},
                    _seconds(node.started_at, node.finished_at),
                )
    return dict(added)


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


class MetricsLedger:
    """Holds the lease when it can, folds runs, and keeps the totals to export."""

    def __init__(
        self,
        records: MetricRecords,
        routing: RoutingRecords,
        *,
        lease_seconds: float,
        holder: str | None = None,
    ) -> None:
        self.records = records
        self.routing = routing
        self.lease = timedelta(seconds=lease_seconds)
        self.holder = holder or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.leader = False
        self._snapshot: list[tuple[str, dict[str, str], float]] = []

    def round(self) -> int:
        """One round: keep or take the lease; if held, fold every run waiting. Returns how many."""
        was_leader = self.leader
        try:
            self.leader = self.records.hold_lease(name=LEASE, holder=self.holder, ttl=self.lease)
        except FigwayError:
            # Unable to renew, it may have lapsed: exporting on could count runs twice.
            self.leader = False
            self._snapshot = []
            raise
        if self.leader != was_leader:
            log.info("metrics ledger %s by %s", "held" if self.leader else "lost", self.holder)
        if not self.leader:
            self._snapshot = []
            return 0
        folded = 0
        while True:
            batch = self.records.fold_runs(increments)
            folded += batch
            if batch == 0:
                break
        self._snapshot = self.records.totals() + self._counted_rows()
        return folded

    def _counted_rows(self) -> list[tuple[str, dict[str, str], float]]:
        """Series that are counts of rows that are never deleted: exact as they stand."""
        rows: list[tuple[str, dict[str, str], float]] = []
        for count in self.routing.shadow_counts():
            labels = {"workflow_id": count.workflow_id, "shadow_backend": count.backend}
            rows.append(("figway_shadow_comparisons_total", labels, float(count.compared)))
            rows.append(("figway_shadow_mismatches_total", labels, float(count.mismatched)))
        for rule_id, trips in self.routing.guard_trip_counts().items():
            rows.append(("figway_guard_trips_total", {"rule": rule_id}, float(trips)))
        for rule_id, advances in self.routing.rollout_advance_counts().items():
            rows.append(("figway_rollout_advances_total", {"rule": rule_id}, float(advances)))
        return rows

    def release(self) -> None:
        if self.leader:
            self.records.release_lease(name=LEASE, holder=self.holder)
            self.leader = False
            self._snapshot = []

    def snapshot(self) -> list[tuple[str, dict[str, str], float]]:
        return self._snapshot


class LedgerCollector(Collector):
    """Exports the ledger's totals, from its last round (a scrape never queries the database)."""

    def __init__(self, ledger: MetricsLedger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        snapshot = self.ledger.snapshot()
        by_family: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for series, labels, value in snapshot:
            by_family[series].append((labels, value))
        for family in LEDGER.values():
            if family.kind == "counter":
                counter = CounterMetricFamily(
                    family.name.removesuffix("_total"), family.help, labels=family.labels
                )
                for labels, value in by_family.get(family.name, []):
                    counter.add_metric([labels.get(name, "") for name in family.labels], value)
                yield counter
            else:
                yield _histogram(family.name, family.help, family.labels, by_family)


def _histogram(
    name: str,
    help: str,
    label_names: tuple[str, ...],
    by_family: Mapping[str, list[tuple[dict[str, str], float]]],
) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily(name, help, labels=label_names)
    buckets: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for labels, value in by_family.get(name, []):
        key = tuple(labels.get(n, "") for n in label_names)
        buckets[key][labels["le"]] = value
    sums = {
        tuple(labels.get(n, "") for n in label_names): value
        for labels, value in by_family.get(f"{name}_sum", [])
    }
    for key, counts in sorted(buckets.items()):
        cumulative = 0.0
        points: list[tuple[str, float]] = []
        for bound in [*(str(b) for b in BUCKETS), _INF]:
            cumulative += counts.get(bound, 0.0)
            points.append((bound, cumulative))
        histogram.add_metric(list(key), points, sum_value=sums.get(key, 0.0))
    return histogram
