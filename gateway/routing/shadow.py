"""Shadow runs: the same run executed on a second backend, only to compare results.

A shadow run is a run of its own (``<job_run_id>~shadow``, an id clients
cannot choose), flagged ``sandboxed`` so nodes with side effects write
nothing, and left out of the client's stats. Once both runs finished, the
comparer checks them node by node (status, attempts, an output fingerprint)
and records the result once, whichever gateway gets there first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from backends.artifacts import comparable_output
from backends.store import RunView, Store
from backends.store.routing_records import RoutingRecords

__all__ = [
    "SHADOW_SUFFIX",
    "ShadowComparer",
    "compare_runs",
    "output_fingerprint",
    "shadow_id",
    "with_shadow",
]

log = logging.getLogger(__name__)

#: The API refuses ``~`` in a job_run_id, so no client run can collide with a shadow.
SHADOW_SUFFIX = "~shadow"


def shadow_id(job_run_id: str) -> str:
    return f"{job_run_id}{SHADOW_SUFFIX}"


def with_shadow(reason: str, shadow: str | None, refusal: str | None) -> tuple[str, str | None]:
    """The route's reason saying what became of the rule's shadow, and the shadow to start.

    >>> with_shadow("rule 'r': rq", "prefect", None)
    ("rule 'r': rq; shadowed on prefect", 'prefect')
    >>> with_shadow("rule 'r': rq", "prefect", "node 'load' writes")
    ("rule 'r': rq; not shadowed on prefect: node 'load' writes", None)
    """
    if shadow is None:
        return reason, None
    if refusal is not None:
        return f"{reason}; not shadowed on {shadow}: {refusal}", None
    return f"{reason}; shadowed on {shadow}", shadow


def output_fingerprint(output: Any) -> str:
    """A short hash of a node's output, equal for equal JSON whatever its key order.

    >>> output_fingerprint({"a": 1, "b": [2]}) == output_fingerprint({"b": [2], "a": 1})
    True
    """
    # A table output is compared by its content (rows, columns, fingerprint), not by
    # where each run stored it.
    output = comparable_output(output)
    canonical = json.dumps(output, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def compare_runs(primary: RunView, shadow: RunView) -> list[dict[str, Any]]:
    """Every difference between a run and its shadow: run status, then per node."""
    mismatches: list[dict[str, Any]] = []

    def differ(node: str | None, what: str, mine: Any, theirs: Any) -> None:
        if mine != theirs:
            mismatches.append({"node": node, "field": what, "primary": mine, "shadow": theirs})

    differ(None, "status", primary.status.value, shadow.status.value)
    for node_id, node in primary.nodes.items():
        other = shadow.nodes.get(node_id)
        if other is None:
            differ(node_id, "present", True, False)
            continue
        differ(node_id, "status", node.status.value, other.status.value)
        differ(node_id, "attempts", node.attempts, other.attempts)
        differ(
            node_id,
            "output_fingerprint",
            output_fingerprint(node.output),
            output_fingerprint(other.output),
        )
    return mismatches


class ShadowComparer:
    def __init__(self, store: Store, records: RoutingRecords) -> None:
        self.store = store
        self.records = records

    def compare_finished(self) -> int:
        """Compare every finished pair not compared yet; returns how many this call recorded."""
        recorded = 0
        for pair in self.records.shadows_to_compare():
            primary = self.store.get_run(job_run_id=pair.job_run_id)
            shadow = self.store.get_run(job_run_id=pair.shadow_run_id)
            if primary is None or shadow is None:
                continue
            mismatches = compare_runs(primary, shadow)
            if self.records.record_comparison(
                pair=pair,
                workflow_id=primary.workflow_id,
                primary_backend=primary.backend,
                shadow_backend=shadow.backend,
                mismatches=mismatches,
            ):
                recorded += 1
                if mismatches:
                    log.warning(
                        "shadow mismatch for run %s (%s on %s, shadow on %s): %s",
                        primary.job_run_id,
                        primary.workflow_id,
                        primary.backend,
                        shadow.backend,
                        mismatches,
                    )
        return recorded
