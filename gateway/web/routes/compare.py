"""``GET /routing/compare``: RQ against Prefect per workflow, from figway's own records."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from backends.store import utcnow
from backends.store.comparison_records import Reports
from gateway.reports.comparison import (
    DEFAULT_SINCE,
    ComparisonReport,
    Thresholds,
    comparison_report,
    parse_since,
)
from gateway.reports.judge import FINEST_FAILURE_INCREASE, FINEST_TIME_RATIO, Figure
from gateway.routing.rules import DEFAULT_WATCH
from gateway.web.deps import ServicesDep

__all__ = ["router"]

router = APIRouter(prefix="/routing", tags=["routing"])

_DEFAULTS = Thresholds()
_FIELDS = Thresholds.model_fields


@router.get(
    "/compare",
    response_model=ComparisonReport,
    responses={422: {"description": "a parameter is invalid; the error names it"}},
)
async def compare(
    services: ServicesDep,
    since: Annotated[
        str,
        Query(
            max_length=64,
            description="Runs that finished since: an ISO time (UTC unless it has a zone) or a "
            "duration back from now (30m, 24h, 7d, 2w, 1d12h).",
        ),
    ] = DEFAULT_SINCE,
    workflow: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None,
        Query(max_length=500, description="Only this workflow (repeatable, up to 500)."),
    ] = None,
    min_runs: Annotated[
        int, Query(ge=1, le=1_000_000, description=_FIELDS["min_runs"].description)
    ] = _DEFAULTS.min_runs,
    failure_margin: Annotated[
        float,
        Query(
            ge=FINEST_FAILURE_INCREASE * 100,
            lt=100,
            description=_FIELDS["failure_margin_points"].description,
        ),
    ] = _DEFAULTS.failure_margin_points,
    max_ratio: Annotated[
        float,
        Query(ge=FINEST_TIME_RATIO, le=100, description=_FIELDS["max_ratio"].description),
    ] = _DEFAULTS.max_ratio,
    confidence: Annotated[
        float, Query(ge=0.5, le=0.999, description=_FIELDS["confidence"].description)
    ] = _DEFAULTS.confidence,
    watch: Annotated[
        list[Figure] | None,
        Query(
            max_length=4,
            description="A figure that decides the answer (repeatable; "
            "default failure_rate and execution_time). Every figure is shown.",
        ),
    ] = None,
) -> ComparisonReport:
    """RQ against Prefect per workflow: runs, the four figures, retries, shadows, and the
    judge's answer.

    Only client runs that finished in the window count. runs = succeeded +
    failed (cancelled runs are counted, not judged); failure rate = failed /
    runs; queue wait = accepted to first node running (judged runs that
    started; 0 when a node started before the acceptance was recorded);
    execution time = first node running to finished and total time = accepted
    to finished (succeeded runs); percentiles are nearest-rank; retries per
    run = sum over nodes of max(attempts - 1, 0) / runs; shadow mismatch rate
    = mismatched / compared shadow comparisons made in the window, on the
    shadow's backend. The judge (docs/decisions.md) answers worse, not_worse
    or inconclusive on the watched figures with anytime-valid tests, with
    every figure's estimate and confidence bounds, the runs a side still
    needed and how long they should take at the window's rate.
    """
    now = utcnow()
    try:
        start = parse_since(since, now=now)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "since"), "msg": str(exc), "input": since}]
        ) from exc
    thresholds = Thresholds(
        min_runs=min_runs,
        failure_margin_points=failure_margin,
        max_ratio=max_ratio,
        confidence=confidence,
        watch=[figure.value for figure in watch] if watch else list(DEFAULT_WATCH),
    )
    reports = Reports(services.engine)
    return await run_in_threadpool(
        lambda: comparison_report(
            reports,
            services.records,
            since=start,
            now=now,
            thresholds=thresholds,
            workflows=workflow or (),
        )
    )
