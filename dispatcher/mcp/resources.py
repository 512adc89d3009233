"""The MCP resources of a job: its log (the last MiB) and its diff (stat and patch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context

from dispatcher.mcp.auth import principal
from dispatcher.mcp.tools import JobId
from dispatcher.process import logpage

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service


def register(server: MCPServer[Any], service: Service) -> None:
    access = service.access

    @server.resource(
        "dispatcher://jobs/{job_id}/log",
        name="job-log",
        description="The job's log (agent output and the daemon's notes): its last MiB.",
        mime_type="text/plain",
    )
    def job_log(job_id: JobId, ctx: Context[Any, Any]) -> str:
        access.check_job(principal(ctx), job_id)
        page = service.outputs.log_page(job_id, tail=logpage.DEFAULT_LIMIT)
        return page.data.decode("utf-8", errors="replace")

    @server.resource(
        "dispatcher://jobs/{job_id}/diff",
        name="job-diff",
        description="The job's changes against its base commit: the diffstat, then the patch.",
        mime_type="text/x-diff",
    )
    def job_diff(job_id: JobId, ctx: Context[Any, Any]) -> str:
        access.check_job(principal(ctx), job_id)
        diff = service.outputs.diff(job_id)
        return f"{diff.stat}\n{diff.patch}"
