"""FastAPI dependencies: the service and path and query parameters.

The bearer token is checked once for the whole app, by
:class:`dispatcher.api.middleware.BearerAuth`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Query, Request

from dispatcher.store.models import IdempotencyKey

if TYPE_CHECKING:  # the faces know the service by its type only (see pyproject.toml)
    from dispatcher.service import Service

IDEMPOTENCY_STATE = "idempotency"  # where the Idempotency middleware leaves the request's key


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def idempotency_key(request: Request) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key`` (from the Idempotency middleware), for a
    use-case that creates something to store with what it creates."""
    value = request.scope.get("state", {}).get(IDEMPOTENCY_STATE)
    return value if isinstance(value, IdempotencyKey) else None


# "Service": a forward reference FastAPI never needs to resolve (a dependency's own type
# is not validated), so the API imports nothing of the service at run time.
ServiceDep = Annotated["Service", Depends(get_service)]
IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]


MAX_ID = 2**63 - 1  # SQLite INTEGER; larger ids cannot exist and must not reach the database
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="A job id")]
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="An event id")]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only ids below this one")]
