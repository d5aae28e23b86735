"""``/metrics``: Prometheus' text format, from memory (no database query per scrape)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    """figway's metrics. The run figures come only from the gateway holding the metrics
    lease (figway_metrics_leader 1): sum them over every gateway."""
    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
