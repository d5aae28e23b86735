"""Routing rules the test gateways share."""

from __future__ import annotations

__all__ = ["PREFECT_AND_SHADOW_RULES"]

#: Workflows named pf-* go to Prefect; shadow-* run on RQ with a shadow on Prefect.
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
"""
