"""Every metric figway exports: its name, kind, labels and meaning, in one place.

Labels stay bounded: ``backend`` (two), ``workflow_id`` (the registered
workflows), ``node_type``, ``outcome``, rule ids from the rules file. A run id
is never a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BUCKETS", "LEDGER", "PROCESS", "Family"]

#: Histogram buckets in seconds, from 5 ms to a day: submit latency to long ETL runs.
BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 43_200.0, 86_400.0,
)  # fmt: skip


@dataclass(frozen=True)
class Family:
    name: str
    kind: Literal["counter", "histogram", "gauge"]
    help: str
    labels: tuple[str, ...]


def _family(
    name: str, kind: Literal["counter", "histogram", "gauge"], help: str, *labels: str
) -> Family:
    return Family(name, kind, help, labels)


#: Counted from figway's database by the gateway holding the metrics lease: each run
#: once across all gateways, continuing across restarts.
LEDGER = {
    f.name: f
    for f in (
        _family(
            "figway_runs_submitted_total",
            "counter",
            "Client runs a backend accepted.",
            "backend",
            "workflow_id",
        ),
        _family(
            "figway_runs_finished_total",
            "counter",
            "Client runs that ended, by outcome (succeeded, failed, cancelled).",
            "backend",
            "workflow_id",
            "outcome",
        ),
        _family(
            "figway_run_queue_wait_seconds",
            "histogram",
            "From a run's submission to its first node running, observed when the run ends.",
            "backend",
            "workflow_id",
        ),
        _family(
            "figway_run_duration_seconds",
            "histogram",
            "From a run's first node running to its end.",
            "backend",
            "workflow_id",
        ),
        _family(
            "figway_node_duration_seconds",
            "histogram",
            "A node's last attempt, from its start to its end.",
            "backend",
            "node_type",
        ),
        _family(
            "figway_node_retries_total",
            "counter",
            "Node attempts after the first, in runs that ended.",
            "backend",
            "workflow_id",
        ),
        _family(
            "figway_shadow_comparisons_total",
            "counter",
            "Runs compared with their shadow run.",
            "workflow_id",
            "shadow_backend",
        ),
        _family(
            "figway_shadow_mismatches_total",
            "counter",
            "Runs whose shadow run ended differently.",
            "workflow_id",
            "shadow_backend",
        ),
        _family(
            "figway_guard_trips_total",
            "counter",
            "Guards that rolled their rule back.",
            "rule",
        ),
        _family(
            "figway_rollout_advances_total",
            "counter",
            "Rollouts in steps advanced a step on the judge's evidence.",
            "rule",
        ),
    )
}

#: Observed by each gateway on its own requests and checks.
PROCESS = {
    f.name: f
    for f in (
        _family(
            "figway_submit_seconds",
            "histogram",
            "Accepting a new run: routing, recording and submitting it.",
            "backend",
        ),
        _family(
            "figway_routing_decisions_total",
            "counter",
            "New runs routed, by rule (`default` when none matched, `pinned` by definition) "
            "and reason (pinned, default, rule, rollout, rollout_rest, guard).",
            "backend",
            "rule",
            "reason",
        ),
        _family(
            "figway_fallbacks_total",
            "counter",
            "Runs sent to their rule's fallback because the chosen backend was unreachable.",
            "from_backend",
            "to_backend",
        ),
        _family(
            "figway_rules_reloads_total",
            "counter",
            "Rules files read while serving, by result (applied, refused).",
            "result",
        ),
        _family(
            "figway_backend_up",
            "gauge",
            "1 when the backend answered the gateway's last check, else 0.",
            "backend",
        ),
        _family(
            "figway_rollout_percent",
            "gauge",
            "The share of a stepped rule's runs sent to its backend now (0 while rolled back).",
            "rule",
        ),
        _family(
            "figway_rollout_step",
            "gauge",
            "The step a stepped rule's rollout is at (1 is its first; 0 while rolled back).",
            "rule",
        ),
        _family(
            "figway_metrics_leader",
            "gauge",
            "1 on the gateway exporting the figway_runs_* and other ledger families.",
        ),
    )
}
