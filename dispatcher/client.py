"""A small httpx client for the daemon's API, used by the CLI (and tests, and scripts).

Errors come back as :class:`RemoteError` carrying the API's stable ``code``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx

from dispatcher.config import Settings
from dispatcher.errors import DaemonUnavailable, DispatcherError, Unauthorized


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


class Client:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings.url or settings.api_url, read_token(settings))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(
                f"cannot reach the daemon at {self.base_url} ({exc.__class__.__name__}); "
                "is `dispatcher serve` running? (DISPATCHER_URL sets the address)"
            ) from None
        if resp.status_code >= 400:
            raise _error_of(resp)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def follow_log(self, job_id: int, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Yield SSE events ({"event": ..., "data": {...}}) of the job's log until it ends."""
        try:
            with self._http.stream(
                "GET",
                f"/jobs/{job_id}/log",
                params={"follow": "true", "offset": offset},
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
