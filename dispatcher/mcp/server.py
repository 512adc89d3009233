"""The MCP server, built from a :class:`~dispatcher.service.Service`: its tools and
resources (one module per resource), the daemon's errors as one-line tool errors, and
its streamable HTTP endpoint, whose session manager runs in the app's lifespan.

The endpoint is stateless and answers JSON (the SDK's ``stateless_http`` and
``json_response``): every POST carries its own bearer token and is served on its own,
so nothing is kept between requests, a daemon restart loses no session, and a job
token stops working with its next request once its job ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, InputRequiredResult, TextContent
from pydantic import AnyUrl, ValidationError
from starlette.applications import Starlette

from dispatcher import __version__
from dispatcher.errors import DispatcherError
from dispatcher.mcp import auth, resources
from dispatcher.mcp.tools import actions, events, jobs, repos, teams

if TYPE_CHECKING:
    from dispatcher.service import Service

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
worktree-dispatcher runs coding agents as jobs, each in its own git worktree and branch.
Create a job with create_job, watch it with show_job and job_log, read its changes with
job_diff, then merge_job, followup_job (run the agent again on the same branch) or
discard_job. Job ids are integers. An agent's own token (DISPATCHER_JOB_TOKEN) reaches
the jobs it created and itself: its children start from its branch and may be merged
into any branch but the repo's default branch, which a person merges.
A team's lead and members coordinate with the team tools: show_team, add_task (the lead),
send_message and read_messages (wait_s long-polls), signal, submit_plan; with a job
token they act on your own team, as you ("lead" or "task:<id>")."""


def one_line(exc: BaseException) -> str | None:
    """The one-line message of a refusal the caller can act on (a daemon error, or
    arguments that do not validate) found in ``exc``'s causes; None for anything else."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DispatcherError):
            return seen.message
        if isinstance(seen, ValidationError):
            parts = []
            for err in seen.errors()[:3]:
                where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
                parts.append(f"{where}: {err.get('msg', 'invalid')}")
            return "invalid arguments: " + "; ".join(parts)
        seen = seen.__cause__
    return None


class DispatcherMCP(MCPServer[Any]):
    """The SDK's server; a daemon error becomes a tool error with the very message the
    REST API answers with, and bad arguments one line naming the field."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            message = one_line(exc)
            if message is None:
                raise
            log.info("mcp tool %s refused: %s", name, message)
            return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        try:
            return await super().read_resource(uri, context)
        except ResourceError as exc:
            message = one_line(exc)
            if message is None:
                raise
            log.info("mcp resource %s refused: %s", uri, message)
            raise MCPError(code=INVALID_PARAMS, message=message, data={"uri": str(uri)}) from exc


@dataclass(frozen=True)
class McpFace:
    """The server and the ASGI app of its endpoint (mounted at :data:`auth.PATH`)."""

    server: DispatcherMCP
    app: Starlette

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The SDK's session manager, run for as long as the daemon's app runs."""
        return self.server.session_manager.run()


def build(service: Service) -> McpFace:
    """The MCP face of ``service``: every tool and resource, and the endpoint's app."""
    server = DispatcherMCP(
        "worktree-dispatcher", version=__version__, instructions=INSTRUCTIONS,
        log_level="WARNING",
    )  # fmt: skip
    for part in (repos, jobs, actions, events, teams, resources):
        part.register(server, service)
    app = server.streamable_http_app(
        streamable_http_path=auth.PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=service.settings.max_request_bytes,
        host=service.settings.host,
    )
    return McpFace(server, app)
