"""The principal a request to ``/mcp`` is from, as the MCP tools see it.

:class:`dispatcher.api.middleware.BearerAuth`, the one token check of the whole app,
turns the bearer token of every request to ``/mcp`` into a principal (the daemon
token: everything; a job token: scoped; :mod:`dispatcher.service.access` decides
both) and leaves it in the request's scope under :data:`PRINCIPAL`. The token is
checked again on every HTTP request, so a job token stops working the moment its
job stops running; the token itself goes no further and is never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.config import MCP_PATH
from dispatcher.errors import Unauthorized

if TYPE_CHECKING:  # the SDK is loaded with the server, at the first request (endpoint.py)
    from mcp.server.mcpserver import Context

    from dispatcher.service.access import Principal

PATH = MCP_PATH  # the endpoint on the daemon's own app
PRINCIPAL = "dispatcher.principal"  # the request scope's state key of its principal


def principal(ctx: Context[Any, Any]) -> Principal:
    """The principal of the request a tool or resource serves."""
    request = ctx.request_context.request
    who = getattr(request, "scope", {}).get("state", {}).get(PRINCIPAL)
    if who is None:  # BearerAuth lets no request without one reach the endpoint
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return who  # type: ignore[no-any-return]
