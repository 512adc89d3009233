"""FastAPI dependencies: the service and the bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dispatcher.errors import Unauthorized
from dispatcher.service import Service

_bearer = HTTPBearer(auto_error=False, description="The token in <state dir>/token")


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: str = request.app.state.token
    given = credentials.credentials if credentials is not None else ""
    if not given:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("wrong bearer token")


ServiceDep = Annotated[Service, Depends(get_service)]


MAX_ID = 2**63 - 1  # SQLite INTEGER; larger ids cannot exist and must not reach the database
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="A job id")]
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="An event id")]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only ids below this one")]
