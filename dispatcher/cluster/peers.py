"""Job operations on any node (docs/cluster.md, "Job operations on any node").

What needs a job's worktree, branch, log or agent (cancel, discard, merge, diff, log,
push, pull request, rebase, follow-up) is done by the node that holds the job; any other
node asks that node's API the same request and answers with its answer, errors
included. A job is held by the node of the worker in its row (``job.worker_id``: the
worker that claimed it, re-adopted its agent or took it over); a job no worker took is
any node's. On SQLite (one daemon) every job is this node's.

The asking node sends the cluster's peer token (:class:`~dispatcher.store.models.ClusterSecret`
``peer``, which each node's API accepts as its own token) and its node id in
:data:`FORWARDED_BY`. A request that came forwarded is never forwarded again: if the job
moved to a third node meanwhile, the caller is told to try again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import httpx_sse
from pydantic import BaseModel

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidState, NodeUnavailable
from dispatcher.lifecycle import JobState
from dispatcher.process.logpage import LogChunk, LogEnd, LogPage
from dispatcher.store.database import Store
from dispatcher.store.models import ActionResult, Job
from dispatcher.store.workers import WorkerStore

log = logging.getLogger(__name__)

FORWARDED_BY = "X-Dispatcher-Forwarded-By"
"""The header of a request one node makes of another: the asking node's id."""

PEER_SECRET = "peer"  # noqa: S105 (the name of the row, not a secret)
# A merge, discard or cancel waits for the agent to stop (the kill grace, 30 s by default).
REQUEST_TIMEOUT_S = 120.0

_ANY_NODE = frozenset({JobState.QUEUED, JobState.MERGED, JobState.DISCARDED})

_forwarded: ContextVar[str | None] = ContextVar("dispatcher_forwarded_by", default=None)


@contextmanager
def forwarded(by: str | None) -> Iterator[None]:
    """While a forwarded request is served (the API's middleware): its asking node."""
    token = _forwarded.set(by)
    try:
        yield
    finally:
        _forwarded.reset(token)


@dataclass(frozen=True)
class Holder:
    """The node that holds a job, and the API of its running worker."""

    node: str
    name: str  # its worker's name, for messages
    url: str


def _errors() -> dict[str, type[DispatcherError]]:
    found: dict[str, type[DispatcherError]] = {}
    stack: list[type[DispatcherError]] = [DispatcherError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack += cls.__subclasses__()
    return found


class Peers:
    """Who holds a job, and the requests this node makes of the node that does."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        self.node = store.node
        self.rows = WorkerStore(store)
        self.timeout = timedelta(seconds=settings.worker_timeout_seconds)
        self._token: str | None = None

    header = FORWARDED_BY
    serving = staticmethod(forwarded)  # a forwarded request is served inside it

    @property
    def enabled(self) -> bool:
        """Several nodes may share the database (PostgreSQL) and this store knows its node."""
        return self.node is not None and self.store.backend.queue_conninfo() is not None

    def token(self) -> str | None:
        """The cluster's peer token (made by the first node that asks), None on SQLite."""
        if not self.enabled:
            return None
        if self._token is None:
            self._token = self.rows.secret(PEER_SECRET)
        return self._token

    @staticmethod
    def is_forwarded() -> bool:
        """This request came from another node (it is never forwarded again)."""
        return _forwarded.get() is not None

    def reach(self, node: str) -> tuple[str | None, Holder | None]:
        """``node``'s name (its newest worker's; None: it has no worker row) and the API
        of its running worker (None: it has none running). One read of the workers."""
        workers = self.rows.listed(this=None, timeout=self.timeout, everyone=True)
        mine = [w for w in workers if w.node == node]
        live = next((w for w in mine if w.alive), None)
        name = mine[0].name if mine else None
        if live is None:
            return name, None
        return name, Holder(node=node, name=live.name, url=live.api_url.rstrip("/"))

    def node_of(self, job: Job) -> str | None:
        """The node whose clone has the job's worktree and branch (None: no node, or
        SQLite): a follow-up of it is pinned there (``job.node``)."""
        if not self.enabled:
            return None
        if job.node is not None or job.worker_id is None:
            return job.node  # a follow-up's, or the dead node of a job a take-over ended
        return self.rows.node_of(job.worker_id)

    def holder(self, job: Job, what: str) -> Holder | None:
        """The other node that holds ``job``, which ``what`` (say "cancel") must be asked
        of; None: this node does it. :class:`NodeUnavailable` when that node has no
        running worker; :class:`InvalidState` when this request came forwarded already."""
        # A queued job is any node's (its worker, if any, is a past attempt's); a merged or
        # discarded one has nothing left in a clone.
        if not self.enabled or job.worker_id is None or job.state in _ANY_NODE:
            return None
        node = self.node_of(job)
        if node is None or node == self.node:
            return None
        if _forwarded.get() is not None:
            raise InvalidState(
                f"job {job.id} moved to another node while this {what} was forwarded here; "
                "try again"
            )
        name, holder = self.reach(node)
        if holder is None:
            name = name or "?"
            raise NodeUnavailable(
                f"job {job.id} is held by node {name} ({node}), which is not running: its "
                f"{what} needs that node (its worktree, branch, log or agent are there)",
                details={"node": node, "name": name},
            )
        return holder

    # ------------------------------------------------------------ requests

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", FORWARDED_BY: self.node or ""}

    def request(
        self,
        holder: Holder,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """``method path`` on the holder's API; its error answered as the same error."""
        content = body.model_dump_json(exclude_unset=True) if body is not None else None
        headers = self._headers() | ({"Content-Type": "application/json"} if content else {})
        try:
            resp = httpx.request(
                method, holder.url + path, content=content, headers=headers,
                params={k: v for k, v in (params or {}).items() if v is not None},
                timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise self._unreachable(holder, exc) from None
        if resp.status_code >= 400:
            raise self._error(holder, resp)
        return resp

    def action(
        self, holder: Holder, job_id: int, verb: str, body: BaseModel | None = None
    ) -> ActionResult:
        """``POST /jobs/{id}/{verb}`` on the holder: its :class:`ActionResult`."""
        resp = self.request(holder, "POST", f"/jobs/{job_id}/{verb}", body=body)
        return ActionResult.model_validate_json(resp.content)

    def log_page(self, holder: Holder, job_id: int, **params: int | None) -> LogPage:
        resp = self.request(holder, "GET", f"/jobs/{job_id}/log", params=params)
        h = resp.headers
        return LogPage(
            data=resp.content, start=int(h["X-Log-Start"]), size=int(h["X-Log-Size"]),
            file_id=int(h.get("X-Log-File-Id", "0")), restarted=h.get("X-Log-Restarted") == "1",
        )  # fmt: skip

    async def follow(
        self,
        holder: Holder,
        job_id: int,
        offset: int,
        disconnected: Callable[[], Awaitable[bool]],
        file_id: int | None = None,
    ) -> AsyncIterator[LogChunk | LogEnd]:
        """The holder's SSE follow of the job's log, as the local follow's items."""
        params = {"follow": "true", "offset": offset}
        if file_id is not None:
            params["file_id"] = file_id
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=None)  # a quiet agent sends pings only
        try:
            async with (
                httpx.AsyncClient(timeout=timeout) as client,
                httpx_sse.aconnect_sse(
                    client,
                    "GET",
                    f"{holder.url}/jobs/{job_id}/log",
                    params=params,
                    headers=self._headers(),
                ) as source,  # fmt: skip
            ):
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise self._error(holder, source.response)
                async for event in source.aiter_sse():
                    data = json.loads(event.data) if event.data else {}
                    if event.event == "log":
                        text = str(data["text"])
                        yield LogChunk(int(data["offset"]), text, int(data.get("file_id", 0)),
                                       text.encode())  # fmt: skip
                    elif event.event == "end":
                        yield LogEnd(str(data["state"]), int(data["offset"]))
                        return
                    if await disconnected():
                        return
        except httpx.HTTPError as exc:
            raise self._unreachable(holder, exc) from None

    # ------------------------------------------------------------ errors

    def _unreachable(self, holder: Holder, exc: Exception) -> NodeUnavailable:
        first = (str(exc).splitlines() or [""])[0]
        return NodeUnavailable(
            f"node {holder.name} ({holder.url}), which holds the job, did not answer: "
            f"{type(exc).__name__}{': ' + first if first else ''}",
            details={"node": holder.node},
        )

    def _error(self, holder: Holder, resp: httpx.Response) -> DispatcherError:
        try:
            error = resp.json()["error"]
            code, message = str(error["code"]), str(error["message"])
            details = error.get("details") or {}
        except (ValueError, KeyError, TypeError):
            return NodeUnavailable(
                f"node {holder.name} ({holder.url}) answered {resp.status_code} without an "
                "error the dispatcher writes",
                details={"node": holder.node},
            )
        if resp.status_code == 401:  # its API does not take the peer token: a setup error
            return NodeUnavailable(
                f"node {holder.name} ({holder.url}) refused this node's request: {message}",
                details={"node": holder.node},
            )
        cls = _errors().get(code)
        if cls is None:  # not one of ours (an internal error): said as the node's
            return NodeUnavailable(
                f"node {holder.name} ({holder.url}) failed the request: {message}",
                details={"node": holder.node},
            )
        return cls(message, details=details if isinstance(details, dict) else {})
