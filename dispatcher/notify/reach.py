"""Can the daemon reach a notify target? A TCP connection to its host, nothing sent.

``dispatcher doctor`` asks this of every target: a connection opened and closed at
once, with a short timeout, so no notification (and no request at all) goes out.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from dispatcher.notify.targets import Target

CONNECT_TIMEOUT_S = 3.0
"""How long a connection may take before the target counts as unreachable."""


def address(target: Target) -> tuple[str, int]:
    """The host and port a request to ``target`` would connect to (80 or 443 by default)."""
    parts = urlsplit(target.url)
    assert parts.hostname is not None  # validate_target refuses a URL without a host
    return parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80)


def unreachable(target: Target, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why no TCP connection to ``target``'s host could be opened (None: it could)."""
    host, port = address(target)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} in {timeout:g}s"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
