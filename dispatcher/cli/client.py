"""A small httpx client for the daemon's API, used by the CLI (and tests, and scripts).

Errors come back as :class:`RemoteError` carrying the API's stable ``code``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from dispatcher.config import Settings
from dispatcher.errors import DaemonUnavailable, DispatcherError, Unauthorized


@dataclass(frozen=True)
class LogPage:
    """Bytes ``[start, next)`` of a job's ``agent.log``, which held ``size`` bytes then."""

    data: bytes
    start: int
    next: int
    size: int
    file_id: int | None = None  # which agent.log (X-Log-File-Id), to send back
    restarted: bool = False  # the offset was in a file rotated since: read from 0


class RemoteError(DispatcherError):
    """An error answered by the daemon; ``code`` and ``status`` are the API's."""

    code: ClassVar[str] = "remote_error"

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.http_status = status
        self.remote_code = code


def read_token(settings: Settings) -> str:
    token = os.environ.get("DISPATCHER_TOKEN") or settings.token
    if token:
        return token
    try:
        return settings.token_file.read_text().strip()
    except FileNotFoundError:
        raise Unauthorized(
            f"no API token: {settings.token_file} does not exist (has the daemon started "
            "with this state dir?) and DISPATCHER_TOKEN is not set"
        ) from None
    except PermissionError:
        raise Unauthorized(f"cannot read the API token file {settings.token_file}") from None


def _verify(base_url: str) -> bool:
    """Whether the client needs TLS verification: for an https daemon, or when a proxy
    may be used (the environment names one). Otherwise no TLS connection is ever made
    (the client follows no redirects), and a client that verifies would load its CA
    bundle for nothing: about 0.1 s of CPU, a tenth of a CLI call."""
    return base_url.lower().startswith("https:") or bool(urllib.request.getproxies())


class Client:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, verify=_verify(base_url)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings.url or settings.api_url, read_token(settings))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(
                f"cannot reach the daemon at {self.base_url} ({exc.__class__.__name__}); "
                "is `dispatcher serve` running? (DISPATCHER_URL sets the address)"
            ) from None
        if resp.status_code >= 400:
            raise _error_of(resp)
        return resp

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def log_page(
        self,
        job_id: int,
        *,
        offset: int = 0,
        tail: int | None = None,
        limit: int | None = None,
        file_id: int | None = None,
    ) -> LogPage:
        """One page of the job's log: from byte ``offset`` (in the file ``file_id``, an
        earlier page's: a log rotated since is read from 0), or its last ``tail`` bytes."""
        params: dict[str, int] = {"tail": tail} if tail is not None else {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        if file_id is not None and tail is None:
            params["file_id"] = file_id
        resp = self._send("GET", f"/jobs/{job_id}/log", params=params)
        given = resp.headers.get("X-Log-File-Id")  # an older daemon sends none
        return LogPage(
            data=resp.content,
            start=int(resp.headers["X-Log-Start"]),
            next=int(resp.headers["X-Log-Next-Offset"]),
            size=int(resp.headers["X-Log-Size"]),
            file_id=int(given) if given is not None else None,
            restarted=resp.headers.get("X-Log-Restarted") == "1",
        )

    def log_pages(
        self, job_id: int, *, offset: int = 0, tail: int | None = None, limit: int | None = None
    ) -> Iterator[LogPage]:
        """Pages of the job's log from ``offset`` (or its last ``tail`` bytes) to its end
        as it was when each page was read."""
        page = self.log_page(job_id, offset=offset, tail=tail, limit=limit)
        while True:
            if page.data:
                yield page
            if not page.data or page.next >= page.size:
                return
            page = self.log_page(job_id, offset=page.next, limit=limit, file_id=page.file_id)

    def follow_log(
        self, job_id: int, offset: int = 0, *, tail: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield SSE events ({"event": ..., "data": {...}}) of the job's log until it ends,
        from byte ``offset`` or its last ``tail`` bytes."""
        params: dict[str, Any] = {"follow": "true"}
        params.update({"tail": tail} if tail is not None else {"offset": offset})
        try:
            with self._http.stream(
                "GET",
                f"/jobs/{job_id}/log",
                params=params,
                timeout=httpx.Timeout(10.0, read=None),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_of(resp)
                event, data = "message", []
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line == "" and data:
                        yield {"event": event, "data": json.loads("\n".join(data))}
                        if event == "end":
                            return
                        event, data = "message", []
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"lost the daemon at {self.base_url}: {exc}") from None


def _error_of(resp: httpx.Response) -> RemoteError:
    try:
        err = resp.json()["error"]
        return RemoteError(resp.status_code, err["code"], err["message"], err.get("details") or {})
    except (ValueError, KeyError, TypeError):
        text = resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
        return RemoteError(resp.status_code, "http_error", f"HTTP {resp.status_code}: {text}", {})


def relay_mcp_stdio(url: str, token: str) -> None:
    """``dispatcher mcp``: MCP on stdin and stdout, each JSON-RPC message POSTed to the
    daemon's streamable HTTP endpoint ``url`` with ``token`` and each answer written back
    (the SDK's stdio transport reads and writes the lines). The endpoint is stateless and
    answers JSON, so a message needs nothing but its POST: a daemon that is down or
    restarting fails the requests sent meanwhile, each with a one-line JSON-RPC error, and
    the relay goes on. Returns when stdin closes."""
    import anyio

    anyio.run(_relay, url, token)


async def _relay(url: str, token: str) -> None:
    import anyio
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    timeout = httpx.Timeout(30.0, read=300.0)  # a tool may wait (long polls)
    negotiated: dict[str, str] = {}  # the protocol version `initialize` agreed on
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout) as http,
        stdio_server() as (from_client, to_client),
    ):

        async def one(message: Any) -> None:
            answer = await _post_mcp(http, url, message, negotiated)
            if answer is not None:
                await to_client.send(SessionMessage(answer))

        async with to_client, anyio.create_task_group() as tg:
            async for message in from_client:
                if not isinstance(message, Exception):  # a line that is not JSON-RPC: dropped
                    tg.start_soon(one, message.message)
            tg.cancel_scope.cancel()  # stdin closed: the client is gone, and so are its waits


async def _post_mcp(
    http: httpx.AsyncClient, url: str, message: Any, negotiated: dict[str, str]
) -> Any:
    """The daemon's answer to one client message (None for a notification or a response),
    or a JSON-RPC error saying in one line why there is none."""
    import mcp_types as types
    from pydantic import ValidationError

    request_id = message.id if isinstance(message, types.JSONRPCRequest) else None

    def failed(why: str) -> types.JSONRPCError | None:
        if request_id is None:
            return None
        error = types.ErrorData(code=types.INTERNAL_ERROR, message=why)
        return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)

    body = message.model_dump_json(by_alias=True, exclude_unset=True)
    extra = {"Content-Type": "application/json", **negotiated}
    try:
        resp = await http.post(url, content=body, headers=extra)
        content = await resp.aread()
    except httpx.HTTPError as exc:
        return failed(f"cannot reach the daemon at {url}: {exc or type(exc).__name__}")
    if request_id is None:
        return None
    try:
        answer = types.jsonrpc_message_adapter.validate_json(content, by_name=False)
    except ValidationError:
        return failed(f"the daemon answered HTTP {resp.status_code} with no JSON-RPC message")
    if isinstance(answer, types.JSONRPCError) and answer.id is None:
        answer = answer.model_copy(update={"id": request_id})
    if isinstance(answer, types.JSONRPCResponse) and message.method == "initialize":
        version = answer.result.get("protocolVersion")
        if isinstance(version, str):  # the header each later request carries
            negotiated["MCP-Protocol-Version"] = version
    return answer
