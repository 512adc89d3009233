"""The open liveness route: the daemon's version and state, with no token."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and version (no token needed)")
def health(service: ServiceDep) -> Health:
    return service.health()


@router.head("/health", include_in_schema=False)
def health_head(service: ServiceDep) -> Health:
    """``HEAD /health``: the same liveness check for probes that send HEAD (no body)."""
    return service.health()
