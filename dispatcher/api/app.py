"""The FastAPI app factory. Errors become JSON here, in one place."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher import __version__
from dispatcher.api.deps import require_token
from dispatcher.api.middleware import BodyLimit, Idempotency
from dispatcher.api.routes import events, health, jobs, repos, webhooks
from dispatcher.errors import DispatcherError
from dispatcher.service import Service

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, details: object = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(service: Service, token: str) -> FastAPI:
    app = FastAPI(
        title="worktree-dispatcher",
        version=__version__,
        description="Run coding agents in isolated git worktrees; review, merge or discard.",
    )
    app.state.service = service
    app.state.token = token

    @app.exception_handler(DispatcherError)
    async def _dispatcher_error(_: Request, exc: DispatcherError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_input", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "internal error; see the daemon log")

    # Outermost last: the size limit applies before an idempotent request is buffered.
    app.add_middleware(Idempotency, service=service, token=token)
    limit = service.settings.max_request_bytes if service is not None else 10 * 1024 * 1024
    app.add_middleware(BodyLimit, limit=limit)

    app.include_router(health.router)
    protected = [Depends(require_token)]
    app.include_router(repos.router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(events.router, dependencies=protected)
    app.include_router(webhooks.router)  # authenticated by the forge's signature
    return app


def openapi_document() -> dict[str, object]:
    """The API's OpenAPI document, without a running daemon (for docs/openapi.json)."""
    from typing import cast

    return create_app(cast(Service, None), token="").openapi()
