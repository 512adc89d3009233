"""The dashboard's login: the API token exchanged once for a session cookie, and the
CSRF token every state-changing request carries.

The cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``) holds
``<expiry>.<nonce>.<signature>``; the signature is an HMAC keyed by a key derived from
the API token, so nothing is stored, a daemon restart keeps people logged in, and a new
token (another ``DISPATCHER_TOKEN``, or a new ``<state dir>/token``) ends every session. The CSRF
token is another HMAC of the session's nonce: the page carries it (a ``<meta>``, sent
by htmx as ``X-CSRF-Token``), never the API token. Logging out clears the cookie; a
copy of it taken before stays valid until it expires (:data:`SESSION_HOURS`).

:class:`UiGuard` is what the API's :class:`dispatcher.api.middleware.BearerAuth` asks
about every ``/ui`` request: the login page and the static files are open; everything
else needs the cookie, and every method but GET and HEAD the CSRF token too. The cookie
counts on ``/ui`` only: the REST API never reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import cookie_parser

UI_PREFIX: Final = "/ui"
COOKIE: Final = "dispatcher_ui"
CSRF_HEADER: Final = b"x-csrf-token"
SESSION_HOURS: Final = 12
LOGIN_PATH: Final = UI_PREFIX + "/login"
STATIC_PREFIX: Final = UI_PREFIX + "/static/"
_READS: Final = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def covers(path: str) -> bool:
    """True for the dashboard's paths (``/ui`` and below)."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class Sessions:
    """Make and check session cookies and CSRF tokens (keyed by the API token)."""

    def __init__(self, token: str, *, hours: float = SESSION_HOURS) -> None:
        self._token = token.encode()
        self._key = hmac.new(self._token, b"dispatcher dashboard session", "sha256").digest()
        self.max_age = int(hours * 3600)

    def token_matches(self, given: str) -> bool:
        """The login form's token is the API token (constant-time compare)."""
        return bool(self._token) and hmac.compare_digest(given.strip().encode(), self._token)

    def new(self) -> str:
        """A fresh session cookie's value."""
        payload = f"{int(time.time()) + self.max_age}.{secrets.token_urlsafe(18)}"
        return f"{payload}.{self._sign('session', payload)}"

    def nonce(self, cookie: str | None) -> str | None:
        """The session's nonce if ``cookie`` is a valid, unexpired session, else None."""
        if not cookie or not self._token:
            return None
        expiry, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not expiry.isdigit() or not nonce or int(expiry) < time.time():
            return None
        good = self._sign("session", f"{expiry}.{nonce}")
        return nonce if hmac.compare_digest(signature.encode(), good.encode()) else None

    def csrf(self, nonce: str) -> str:
        return self._sign("csrf", nonce)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def cookie_of(scope: Scope) -> str | None:
    """The session cookie a request carries (the first, if several)."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"cookie":
            # Starlette's lenient parser (what request.cookies uses): another app's odd
            # cookie on 127.0.0.1 (a space, a quote, JSON) does not hide ours, as the
            # stdlib's SimpleCookie, which stops at the first one it cannot read, would.
            jar = cookie_parser(value.decode("latin-1"))
            if COOKIE in jar:
                return jar[COOKIE]
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


@dataclass(frozen=True)
class Refusal:
    status: int  # 303 (to the login page), 401 or 403
    why: str


class UiGuard:
    """The dashboard's half of the API's one auth check (see the module docstring)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def refusal(self, scope: Scope) -> Refusal | None:
        """Why a ``/ui`` request is refused, or None when it may go on."""
        method, path = scope["method"], scope["path"]
        if path == LOGIN_PATH and method in ("GET", "HEAD", "POST"):
            return None
        if path.startswith(STATIC_PREFIX) and method in _READS:
            return None
        nonce = self.sessions.nonce(cookie_of(scope))
        if nonce is None:
            if method in _READS and _header(scope, b"hx-request") is None:
                return Refusal(303, "not logged in")
            return Refusal(401, "not logged in (or the session expired): log in again")
        if method in _READS:
            return None
        given = _header(scope, CSRF_HEADER) or b""
        if not hmac.compare_digest(given, self.sessions.csrf(nonce).encode()):
            return Refusal(403, "missing or wrong CSRF token: reload the page")
        return None

    async def refuse(self, send: Send, refusal: Refusal) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]
        if refusal.status == 303:
            headers.append((b"location", LOGIN_PATH.encode()))
        elif refusal.status == 401:
            headers.append((b"hx-redirect", LOGIN_PATH.encode()))  # htmx: to the login page
        body = refusal.why.encode() + b"\n"
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
