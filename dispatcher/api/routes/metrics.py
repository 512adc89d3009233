"""``GET /metrics``: the daemon's figures in the Prometheus text format (docs/observability.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from dispatcher.api.deps import ServiceDep

router = APIRouter(tags=["metrics"])
_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "The metrics"}
}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=_TEXT)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: jobs, durations, spawn latency, queue, events, notices, cost.

    The text exposition format 0.0.4. Token-protected like every route, unless
    `DISPATCHER_METRICS_OPEN=true` on a daemon that listens on loopback only.
    docs/observability.md lists every series, its labels and its source.
    """
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)
