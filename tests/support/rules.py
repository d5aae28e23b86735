"""Routing rules the test gateways share."""

from __future__ import annotations

__all__ = ["PREFECT_AND_SHADOW_RULES"]

#: Workflows named pf-* go to Prefect; shadow-* run on RQ with a shadow on Prefect;
#: stepped-* roll out to Prefect in steps (5% first), judged on execution time.
PREFECT_AND_SHADOW_RULES = """\
phase: 2
default: rq
rules:
  - id: to-prefect
    match: {workflow_id: "pf-*"}
    backend: prefect
  - id: shadowed
    match: {workflow_id: "shadow-*"}
    backend: rq
    shadow: prefect
  - id: stepped
    match: {workflow_id: "stepped-*"}
    backend: prefect
    otherwise: rq
    steps: [5, 50, 100]
    promote: {min_runs: 20, watch: [execution_time], max_ratio: 1.5}
"""
