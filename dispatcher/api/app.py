"""The FastAPI app factory. Errors become JSON here, in one place."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from dispatcher import __version__
from dispatcher.api.docs_ui import add_docs_pages
from dispatcher.api.middleware import (
    BearerAuth,
    BodyLimit,
    Idempotency,
    PeerTokens,
    RequestIds,
    ScopedTokens,
    open_routes,
)
from dispatcher.api.routes import (
    agents,
    doctor,
    events,
    health,
    inbox,
    jobs,
    metrics,
    prune,
    repos,
    teams,
    webhooks,
    workers,
)
from dispatcher.errors import DispatcherError
from dispatcher.mcp import auth as mcp_auth
from dispatcher.store.models import ErrorBody
from dispatcher.web import UI_PREFIX, LazyUi, Sessions, UiGuard

if TYPE_CHECKING:  # the daemon hands the app its service; the API knows only its type
    from dispatcher.mcp.endpoint import McpEndpoint
    from dispatcher.service import Service

log = logging.getLogger(__name__)


def _error(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=headers or None)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


_ERROR_MEANINGS = {
    401: "Missing or wrong bearer token (webhooks: bad or missing signature)",
    404: "No such job, repo, event or ref",
    409: "Not possible in the current state: invalid_state, merge_conflict, dirty_checkout, "
    "ref_moved, already_exists",
    413: "Request body too large",
    422: "Invalid input: malformed JSON, wrong types, unsafe names",
}


def _documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": _ERROR_MEANINGS[s]} for s in statuses}


def _allowed_methods(request: Request) -> list[str]:
    """Methods the API serves on this path (from its OpenAPI document: every route)."""
    app: FastAPI = request.app
    templates: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if templates is None:
        templates = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"),
             [m.upper() for m in ops])
            for path, ops in app.openapi()["paths"].items()
        ]  # fmt: skip
        app.state.allowed_methods = templates
    path = request.url.path
    return sorted({m for rx, methods in templates if rx.match(path) for m in methods})


def _declare_bearer(app: FastAPI, public: frozenset[tuple[str, str]]) -> None:
    """The OpenAPI document marks every operation :class:`BearerAuth` guards as needing
    the bearer token (the same list of public routes decides both)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = plain()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["HTTPBearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "The token in <state dir>/token",
            }
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if (method.upper(), path) not in public:
                        operation["security"] = [{"HTTPBearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _peer_tokens(service: Service | None) -> PeerTokens | None:
    """The token other nodes ask this one with (PostgreSQL's clusters), or None."""
    if service is None:
        return None
    token = service.peers.token()
    if token is None:
        return None
    return PeerTokens(token, service.peers.header, service.peers.serving)


def create_app(
    service: Service,
    token: str,
    *,
    public_docs: bool = False,
    open_metrics: bool = False,
    mcp: McpEndpoint | None = None,
) -> FastAPI:
    """The API. ``public_docs``: serve /docs, /redoc and /openapi.json without the token;
    ``open_metrics``: /metrics too (the daemon allows it on loopback only); ``mcp``: the
    MCP server at /mcp (docs/mcp.md), its session manager run in the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if mcp is None:
            yield
            return
        async with mcp.lifespan():
            yield

    app = FastAPI(
        title="worktree-dispatcher",
        version=__version__,
        description="Run coding agents in isolated git worktrees; review, merge or discard.",
        docs_url=None,  # FastAPI's pages load their assets from a CDN; ours are local
        redoc_url=None,
        lifespan=lifespan,
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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body at all
            return _error(422, "invalid_input", f"invalid request: {exc.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of every route on this path, not just one's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "internal error; see the daemon log")

    # Outermost last: the token is checked before anything else happens (one check for
    # every route), then the size limit, before an idempotent request is buffered.
    public = open_routes(public_docs=public_docs, metrics=open_metrics)
    app.add_middleware(Idempotency, service=service)
    limit = service.settings.max_request_bytes if service is not None else 10 * 1024 * 1024
    app.add_middleware(BodyLimit, limit=limit)
    scoped = None
    if mcp is not None:  # job tokens: at /mcp only (docs/mcp.md, "Auth and scopes")
        access = service.access
        scoped = ScopedTokens(mcp_auth.PATH, access.principal, access.is_job_token)
        app.router.routes.append(Route(mcp_auth.PATH, endpoint=mcp))
    app.add_middleware(
        BearerAuth,
        token=token,
        public=public,
        scoped=scoped,
        state_key=mcp_auth.PRINCIPAL,
        ui=UiGuard(Sessions(token)),
        peers=_peer_tokens(service),
    )
    app.add_middleware(RequestIds)  # outermost: even a refusal's log lines name the job

    app.include_router(health.router)
    errors = _documented_errors(401, 404, 409, 413, 422)
    app.include_router(repos.router, responses=errors)
    app.include_router(jobs.router, responses=errors)
    app.include_router(prune.router, responses=errors)
    app.include_router(events.router, responses=errors)
    app.include_router(inbox.router, responses=errors)
    app.include_router(agents.router, responses=errors)
    app.include_router(teams.router, responses=errors)
    app.include_router(workers.router, responses=errors)
    app.include_router(doctor.router, responses=_documented_errors(401))
    app.include_router(metrics.router, responses=_documented_errors(401))
    # Webhooks are authenticated by the forge's signature, not the token.
    app.include_router(webhooks.router, responses=_documented_errors(401, 413, 422))
    app.mount(UI_PREFIX, LazyUi(service, token))  # the dashboard (docs/dashboard.md), built late
    add_docs_pages(app, openapi_url=app.openapi_url or "/openapi.json")
    _declare_bearer(app, public)
    return app


def openapi_document() -> dict[str, object]:
    """The API's OpenAPI document, without a running daemon (for docs/openapi.json)."""
    from typing import cast

    return create_app(cast("Service", None), token="").openapi()
