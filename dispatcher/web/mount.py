"""``/ui``'s ASGI app on the daemon's own app: the dashboard built at its first request.

Building it (Jinja2, Pygments, its FastAPI routes) costs about 0.2 s of CPU, which a
daemon nobody opens the dashboard of (a CI runner, most tests) does not spend. The first
request builds it (:func:`dispatcher.web.app.create_ui`) in a worker thread, requests
arriving meanwhile wait for that one build, and every request then goes straight to it.
The dashboard has no lifespan of its own (a mounted app's is never run), so nothing is
lost by building it late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from dispatcher.service import Service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyUi:
    """The dashboard of ``service`` as one ASGI app, built when first asked for."""

    def __init__(self, service: Service, token: str) -> None:
        self.service = service
        self.token = token
        self._app: App | None = None
        self._lock: anyio.Lock | None = None  # made in the event loop, at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._build()
        await app(scope, receive, send)

    async def _build(self) -> App:
        if self._lock is None:  # no await since the check: one lock, whoever comes first
            self._lock = anyio.Lock()
        async with self._lock:
            if self._app is None:
                from dispatcher.web.app import create_ui

                self._app = await anyio.to_thread.run_sync(create_ui, self.service, self.token)
        return self._app
