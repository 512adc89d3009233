"""``/mcp``'s ASGI app on the daemon's own app: the MCP server loaded at its first request.

Loading the SDK and building the server costs about 0.8 s of CPU, which a daemon that
is never asked over MCP (a CI runner, most tests) does not spend. The first request
builds the server (:func:`dispatcher.mcp.server.build`, in a worker thread) and starts
the SDK's session manager in the app's lifespan task group, where it runs until the
app stops; every request then goes straight to the SDK's endpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

if TYPE_CHECKING:
    from dispatcher.mcp.server import McpFace
    from dispatcher.service import Service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class McpEndpoint:
    """The MCP server of ``service`` as one ASGI app, built when first asked for."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._face: McpFace | None = None
        self._lock: anyio.Lock | None = None
        self._tasks: TaskGroup | None = None
        self._stop: anyio.Event | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The app's lifespan: the task group the session manager will run in."""
        self._lock, self._stop = anyio.Lock(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._stop.set()  # the session manager, if it runs, shuts down
                self._tasks = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        face = self._face or await self._start()
        await face.app(scope, receive, send)

    async def _start(self) -> McpFace:
        if self._lock is None or self._tasks is None:
            raise RuntimeError("the MCP endpoint serves only inside the app's lifespan")
        async with self._lock:
            if self._face is None:
                from dispatcher.mcp.server import build

                face = await anyio.to_thread.run_sync(build, self.service)
                await self._tasks.start(self._run, face)
                self._face = face
        return self._face

    async def _run(self, face: McpFace, *, task_status: TaskStatus[None]) -> None:
        assert self._stop is not None
        async with face.lifespan():
            task_status.started()
            await self._stop.wait()
