"""What each gateway measures itself: its requests, its routing, its checks of the backends.

Each request is handled by one gateway, so these are summed over gateways
as they are; they start from zero when a gateway restarts, which Prometheus'
``rate()`` and ``increase()`` expect of counters.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Collection, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from backends.model.backend_names import BACKEND_NAMES
from gateway.metrics.families import BUCKETS, PROCESS
from gateway.routing.rollout import RolloutPosition

# `*_created` series double what a scrape carries and no figway panel reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's own series, in a registry of its own (one per app, not the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def labels(name: str) -> tuple[str, ...]:
            return PROCESS[name].labels

        def doc(name: str) -> str:
            return PROCESS[name].help

        self.submit_seconds = Histogram(
            "figway_submit_seconds",
            doc("figway_submit_seconds"),
            labels("figway_submit_seconds"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.routing_decisions = Counter(
            "figway_routing_decisions",
            doc("figway_routing_decisions_total"),
            labels("figway_routing_decisions_total"),
            registry=registry,
        )
        self.fallbacks = Counter(
            "figway_fallbacks",
            doc("figway_fallbacks_total"),
            labels("figway_fallbacks_total"),
            registry=registry,
        )
        self.rules_reloads = Counter(
            "figway_rules_reloads",
            doc("figway_rules_reloads_total"),
            labels("figway_rules_reloads_total"),
            registry=registry,
        )
        self.backend_up = Gauge(
            "figway_backend_up",
            doc("figway_backend_up"),
            labels("figway_backend_up"),
            registry=registry,
        )
        self.rollout_percent = Gauge(
            "figway_rollout_percent",
            doc("figway_rollout_percent"),
            labels("figway_rollout_percent"),
            registry=registry,
        )
        self.rollout_step = Gauge(
            "figway_rollout_step",
            doc("figway_rollout_step"),
            labels("figway_rollout_step"),
            registry=registry,
        )
        self._rollout_rules: set[str] = set()
        self.leader = Gauge(
            "figway_metrics_leader", doc("figway_metrics_leader"), registry=registry
        )
        # Exported at 0 from the start, so a panel or alert has a series before the first event.
        for result in ("applied", "refused"):
            self.rules_reloads.labels(result=result)
        for origin, fallback in itertools.permutations(BACKEND_NAMES, 2):
            self.fallbacks.labels(from_backend=origin, to_backend=fallback)

    def rollouts(self, positions: Mapping[str, RolloutPosition], tripped: Collection[str]) -> None:
        """Where each rollout in steps stands, as this gateway's router has it (every gateway
        reads the same rows: take the max over gateways)."""
        for gone in self._rollout_rules - positions.keys():  # no longer stepped: no series
            with contextlib.suppress(KeyError):
                self.rollout_percent.remove(gone)
                self.rollout_step.remove(gone)
        self._rollout_rules = set(positions)
        for rule_id, position in positions.items():
            rolled_back = rule_id in tripped
            steps_reached = sum(step <= position.percent for step in position.steps)
            self.rollout_percent.labels(rule=rule_id).set(0 if rolled_back else position.percent)
            self.rollout_step.labels(rule=rule_id).set(0 if rolled_back else steps_reached)

    def decided(self, *, backend: str, rule: str | None, reason: str) -> None:
        """A new run routed (before it is submitted: a 503 was routed too)."""
        label = rule or reason  # `default` or `pinned` when no rule decided
        self.routing_decisions.labels(backend=backend, rule=label, reason=reason).inc()

    def submitted(self, *, backend: str, seconds: float) -> None:
        """A new run accepted by ``backend``, ``seconds`` after the request asked for it."""
        self.submit_seconds.labels(backend=backend).observe(seconds)

    def fell_back(self, *, from_backend: str, to_backend: str) -> None:
        self.fallbacks.labels(from_backend=from_backend, to_backend=to_backend).inc()

    def reloaded(self, *, applied: bool) -> None:
        self.rules_reloads.labels(result="applied" if applied else "refused").inc()
