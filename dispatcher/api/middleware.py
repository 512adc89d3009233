"""Pure ASGI middlewares: the bearer-token check, request size limit,
``Idempotency-Key`` replay, and the job or event a request names for its log lines.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streaming responses (the SSE
log) pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from dispatcher import logctx
from dispatcher.api import docs_ui
from dispatcher.api.deps import IDEMPOTENCY_STATE
from dispatcher.errors import Unauthorized
from dispatcher.store.models import IdempotencyKey
from dispatcher.web.session import UiGuard, covers

if TYPE_CHECKING:
    from dispatcher.service import Service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDEMPOTENCY_HEADER = b"idempotency-key"


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    error = {"error": {"code": code, "message": message, "details": {}}}
    await send_json(send, status, error, headers)


# A refusal at the MCP endpoint is a JSON-RPC error (an implementation-defined server
# error code), so that an MCP client shows its message rather than only the status.
JSONRPC_UNAUTHORIZED = -32001


async def send_json(
    send: Send, status: int, document: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


# The routes anyone may call: liveness, and the webhooks (each checks its forge's
# signature instead). Every other request needs the token.
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/health"),
        ("HEAD", "/health"),
        ("POST", "/webhooks/github"),
        ("POST", "/webhooks/gitlab"),
    }
)
# The API description, open only with DISPATCHER_PUBLIC_API_DOCS.
DOCS_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {("GET", "/openapi.json"), ("GET", docs_ui.DOCS_URL), ("GET", docs_ui.OAUTH2_REDIRECT_URL),
     ("GET", docs_ui.REDOC_URL)}
)  # fmt: skip
# The Prometheus metrics, open only with DISPATCHER_METRICS_OPEN on loopback.
METRICS_ROUTES: frozenset[tuple[str, str]] = frozenset({("GET", "/metrics")})
NO_CREDENTIALS = "missing bearer token (Authorization: Bearer <token>)"


def open_routes(*, public_docs: bool, metrics: bool = False) -> frozenset[tuple[str, str]]:
    """The open (method, path) pairs; with ``public_docs``, the docs pages and each of
    their asset files too (by exact path, like every open route: no prefix is open);
    with ``metrics``, GET /metrics."""
    routes = OPEN_ROUTES
    if public_docs:
        assets = {(method, path) for path in docs_ui.asset_paths() for method in ("GET", "HEAD")}
        routes = routes | DOCS_ROUTES | assets
    return routes | METRICS_ROUTES if metrics else routes


@dataclass(frozen=True)
class ScopedTokens:
    """The one path that takes scoped tokens (job tokens) besides the daemon token: the
    MCP endpoint. ``principal`` turns a token into who is asking (raising
    :class:`Unauthorized` with the reason); ``is_scoped`` tells a scoped token by its
    shape, so that every other route can say why it refuses one."""

    path: str
    principal: Callable[[str], object]
    is_scoped: Callable[[str], bool]


@dataclass(frozen=True)
class PeerTokens:
    """The token another node of the cluster asks with (docs/cluster.md, "Job operations
    on any node"), accepted as the daemon token is; a request with it and ``header`` (the
    asking node) is served inside ``serving(node)``, which keeps it from being forwarded
    again."""

    token: str
    header: str
    serving: Callable[[str], AbstractContextManager[None]]


class BearerAuth:
    """The one token check of the whole API: every request but the ``public`` (method, path)
    pairs needs ``Authorization: Bearer <token>``, exactly (constant-time compare of
    the whole credential: a prefix or a longer value is refused). A token in a query
    string or a cookie counts for nothing. Refused: ``401 unauthorized`` with
    ``WWW-Authenticate: Bearer``; the request goes no further (nothing is read,
    stored or replayed). With ``scoped``, its path takes the tokens it resolves (the
    daemon token, or a running job's) and its principal is left in the request's
    state under ``state_key``; a job token anywhere else is refused.

    The dashboard's paths (``/ui``...) are checked by ``ui`` instead: its session cookie
    and CSRF token (:mod:`dispatcher.web.session`), which count there only.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        public: frozenset[tuple[str, str]],
        scoped: ScopedTokens | None = None,
        state_key: str = "principal",
        ui: UiGuard | None = None,
        peers: PeerTokens | None = None,
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.peers = peers
        self.peer_token = peers.token.encode() if peers is not None else b""
        self.public = public
        self.scoped = scoped
        self.state_key = state_key
        self.ui = ui

    @staticmethod
    def credentials(scope: Scope) -> bytes | str:
        """The bearer credentials of the request (bytes), or why there are none (str)."""
        given = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(given) > 1:
            return "more than one Authorization header"
        scheme, _, credentials = (given[0] if given else b"").partition(b" ")
        if scheme.lower() != b"bearer" or not credentials:
            return NO_CREDENTIALS
        return bytes(credentials)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None when it may go on."""
        if (scope["method"], scope["path"]) in self.public:
            return None
        credentials = self.credentials(scope)
        if isinstance(credentials, str):
            return credentials
        if self._is_peer(credentials):
            return None
        if not self.token or not hmac.compare_digest(credentials, self.token):
            scoped = self.scoped
            if scoped is not None and scoped.is_scoped(credentials.decode("latin-1")):
                return f"a job token is accepted at {scoped.path} (MCP) only, not by the REST API"
            return "wrong bearer token"
        return None

    def _is_peer(self, credentials: bytes) -> bool:
        return bool(self.peer_token) and hmac.compare_digest(credentials, self.peer_token)

    def _forwarded_by(self, scope: Scope) -> str | None:
        """The asking node of a request another node forwarded with the peer token."""
        if self.peers is None:
            return None
        credentials = self.credentials(scope)
        if isinstance(credentials, str) or not self._is_peer(credentials):
            return None
        by = _header(scope, self.peers.header.lower().encode())
        return by.decode("latin-1") if by else None

    async def _principal(self, scope: Scope, scoped: ScopedTokens) -> str | None:
        """The scoped path's check: the principal of the token put in the request's state,
        or why it is refused."""
        credentials = self.credentials(scope)
        if isinstance(credentials, str):
            return credentials
        try:
            token = credentials.decode("ascii")
            who = await anyio.to_thread.run_sync(scoped.principal, token)
        except UnicodeDecodeError:
            return "wrong bearer token"
        except Unauthorized as exc:
            return exc.message
        scope.setdefault("state", {})[self.state_key] = who
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes: nothing else is served
            await send({"type": "websocket.close", "code": 1008})
            return
        if self.ui is not None and covers(scope["path"]):
            refused = self.ui.refusal(scope)
            if refused is None:
                await self.app(scope, receive, send)
            else:
                await self.ui.refuse(send, refused)
            return
        challenge = [(b"www-authenticate", b"Bearer")]
        if self.scoped is not None and scope["path"] == self.scoped.path:
            why = await self._principal(scope, self.scoped)
            if why is not None:
                error = {"code": JSONRPC_UNAUTHORIZED, "message": why}
                rpc = {"jsonrpc": "2.0", "id": None, "error": error}
                await send_json(send, Unauthorized.status, rpc, challenge)
                return
        else:
            why = self.refusal(scope)
        if why is None:
            by = self._forwarded_by(scope)
            if by is not None and self.peers is not None:
                with self.peers.serving(by):
                    await self.app(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await send_error(
            send, Unauthorized.status, Unauthorized.code, why, headers=challenge
        )  # fmt: skip


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with ``413 payload_too_large``.

    Webhooks have their own limit (``DISPATCHER_MAX_WEBHOOK_BYTES``) and skip this one.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(
                send, 413, "payload_too_large", f"request body over {self.limit} bytes"
            )
            return
        seen = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now; the app sees a disconnect and its own answer is dropped.
                    refused = True
                    if not started:
                        started = True
                        await send_error(
                            send, 413, "payload_too_large", f"request body over {self.limit} bytes"
                        )
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:  # the app's own failure: not ours to hide
                raise


def _unkeyed(path: str) -> bool:
    """Routes an ``Idempotency-Key`` means nothing to: the webhooks (each forge delivery
    has its own id) and MCP (an answer belongs to its session and principal: a stored
    one replayed to another token, or another session, would cross scopes)."""
    return path.startswith("/webhooks/") or path == "/mcp" or path.startswith("/mcp/")


class Idempotency:
    """``POST`` with ``Idempotency-Key``: the first answer is stored and replayed.

    The key goes to the route (scope state, read by :func:`deps.idempotency_key`):
    a use-case that creates something stores the key with it, in its transaction.
    A retry with the same key, method, path and body gets the stored answer
    (header ``Idempotent-Replayed: true``) and changes nothing; one whose first
    attempt made its resource but was never answered (the daemon stopped) gets
    that resource as it is now (same header), and nothing new is made. The same
    key with a different request is refused (``422``). It sits inside
    :class:`BearerAuth`, so only authenticated requests are stored or replayed;
    answers of 5xx are not stored, and concurrent requests with one key run one
    at a time. Answers are kept ``DISPATCHER_IDEMPOTENCY_HOURS`` (24 h). A body that
    never arrives whole (a disconnect, or one over the size limit) leaves the key unused.
    The webhooks and ``/mcp`` ignore the header (:func:`_unkeyed`).
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # per key: lock, users

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, name: str) -> AsyncIterator[None]:
        """Requests with one key run one at a time; the lock goes with its last user."""
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_raw = _header(scope, IDEMPOTENCY_HEADER) if scope["type"] == "http" else None
        if key_raw is None or scope["method"] != "POST" or _unkeyed(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            key = key_raw.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if not key.isprintable() or not 1 <= len(key) <= 200:
            await send_error(
                send,
                422,
                "invalid_input",
                "Idempotency-Key must be 1-200 printable ASCII characters",
            )
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away, or BodyLimit refused the body (413, already
                # answered): a partial body runs nothing and stores nothing for the key.
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        path = scope["path"]
        digest = hashlib.sha256(
            b"\0".join(
                [scope["method"].encode(), path.encode(), scope.get("query_string", b""), body]
            )
        ).hexdigest()
        idem = self.service.idempotency.key(key, "POST", path, digest)
        async with self._one_at_a_time(f"{key}\0{path}"):
            stored = await anyio.to_thread.run_sync(self.service.idempotency.get, idem)
            if stored is not None and stored.request_hash != digest:
                await send_error(
                    send, 422, "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                )  # fmt: skip
                return
            if stored is not None and stored.status is not None:
                answer = stored.body or b""
                await send(
                    {
                        "type": "http.response.start",
                        "status": stored.status,
                        "headers": [
                            (b"content-type", (stored.content_type or "").encode()),
                            (b"content-length", b"%d" % len(answer)),
                            (b"idempotent-replayed", b"true"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": answer})
                return
            # Pending (what it made is stored, its answer is not: the daemon stopped in
            # between): the route answers with that, as it is now, and creates nothing.
            replayed = stored is not None
            scope.setdefault("state", {})[IDEMPOTENCY_STATE] = idem
            await self._run_and_store(scope, body, send, idem, replayed=replayed)

    async def _run_and_store(
        self, scope: Scope, body: bytes, send: Send, idem: IdempotencyKey, *, replayed: bool
    ) -> None:
        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        content_type = "application/json"
        out: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
                if replayed:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"idempotent-replayed", b"true")],
                    }
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay_receive, capture)
        if status < 500:
            await anyio.to_thread.run_sync(
                self.service.idempotency.answer, idem, status, b"".join(out), content_type
            )


_NAMED = re.compile(r"^/(jobs|events)/(\d{1,19})(?:/|$)")


class RequestIds:
    """A request whose path names a job (``/jobs/{id}...``) or an event (``/events/{id}``)
    binds its id for the log lines made while it is served (:mod:`dispatcher.logctx`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _NAMED.match(scope.get("path", "")) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        field = "job_id" if found.group(1) == "jobs" else "event_id"
        with logctx.bound(**{field: int(found.group(2))}):
            await self.app(scope, receive, send)
