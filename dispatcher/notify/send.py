"""One attempt at a notification: send its request, follow a same-host 307/308, judge the answer.

Connection errors, timeouts, 408, 429 and 5xx are worth retrying (with a numeric
``Retry-After`` when the endpoint gave one); other statuses, a redirect to another
host (or from https to http) and too many redirects are final.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from dispatcher.notify.formats import Request, clip

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``ok``, or an error and whether to try again."""

    ok: bool
    retry: bool
    status: int | None  # of the last response; None when no response came back
    error: str | None  # one line
    retry_after: float | None = None  # seconds, from a numeric Retry-After


def send(client: httpx.Client, request: Request, *, timeout: float) -> Outcome:
    """Send ``request`` once (with at most :data:`MAX_REDIRECTS` same-host 307/308 hops)."""
    url = request.url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            response = client.request(
                request.method,
                url,
                headers=request.headers,
                content=request.body,
                timeout=timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return Outcome(False, True, None, f"timed out after {timeout:g}s")
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
            reason = _one_line(str(exc)) or type(exc).__name__
            return Outcome(False, True, None, f"connection failed: {reason}")
        except httpx.HTTPError as exc:
            reason = _one_line(str(exc)) or type(exc).__name__
            return Outcome(False, False, None, f"request failed: {reason}")
        status = response.status_code
        if status not in (307, 308):
            break
        follow = _same_host_redirect(url, response.headers.get("location"))
        if follow is None:
            return Outcome(
                False,
                False,
                status,
                f"HTTP {status}: redirect to another host (or to http) not followed; "
                "update the URL",
            )
        url = follow
    else:
        return Outcome(False, False, status, f"HTTP {status}: too many redirects")
    if 200 <= status < 300:
        return Outcome(True, False, status, None)
    snippet = _one_line(response.text)
    error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if 300 <= status < 400:
        error += " (redirects other than 307/308 are not followed; update the URL)"
    retry = status in (408, 429) or status >= 500
    retry_after = _retry_after(response.headers.get("retry-after")) if retry else None
    return Outcome(False, retry, status, error, retry_after)


def _retry_after(value: str | None) -> float | None:
    """A numeric ``Retry-After`` in seconds; HTTP dates and junk are ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None  # not NaN


def _same_host_redirect(current: str, location: str | None) -> str | None:
    """Where a 307/308 may be followed: the same host, never from https to http."""
    if not location:
        return None
    try:
        target = urljoin(current, location.strip())
        old, new = urlsplit(current), urlsplit(target)
    except ValueError:
        return None
    if new.scheme not in ("http", "https") or (old.scheme == "https" and new.scheme == "http"):
        return None
    if not new.hostname or (old.hostname or "").lower() != new.hostname.lower():
        return None
    return target


def _one_line(text: str, limit: int = 200) -> str:
    return clip(" ".join(text.split()), limit)
