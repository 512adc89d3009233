"""Tools of repos: list them, file an issue in one's local inbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from dispatcher.mcp.auth import principal
from dispatcher.mcp.tools import RepoName
from dispatcher.store.models import IssueCreate, IssuePublic, RepoPublic

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service


def register(server: MCPServer[Any], service: Service) -> None:
    access = service.access

    @server.tool(
        description="List the registered repos (name, default branch, job counts, active "
        "triggers). With a job token: your own repo."
    )
    def list_repos(ctx: Context[Any, Any]) -> list[RepoPublic]:
        who = principal(ctx)
        return [r for r in service.repos.all() if who.is_admin or r.name == who.repo]

    @server.tool(
        description="File an issue in a repo's local issue inbox; triggers on `issues` "
        "`opened` may start jobs for it. Takes the daemon token."
    )
    def file_issue(
        ctx: Context[Any, Any],
        repo: RepoName,
        title: Annotated[str, Field(min_length=1, max_length=1000, description="One line")],
        body: Annotated[str, Field(max_length=200_000, description="The issue's text")] = "",
        labels: Annotated[list[str] | None, Field(description="Its labels")] = None,
    ) -> IssuePublic:
        access.admin(principal(ctx), "file issues")
        return service.issues.file(repo, IssueCreate(title=title, body=body, labels=labels or []))
