"""FastAPI dependencies: the service and the bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
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
