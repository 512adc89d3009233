"""Tools that act on a job: follow up, merge, discard, cancel, retry; push, pull request, rebase."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import Field

from dispatcher.lifecycle import MergeStrategy
from dispatcher.mcp.auth import principal
from dispatcher.mcp.tools import JobId
from dispatcher.store.models import (
    ActionResult,
    FollowupCreate,
    Label,
    MergeRequest,
    PullRequestCreate,
    PushRequest,
    RemoteName,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service


def register(server: MCPServer[Any], service: Service) -> None:
    access = service.access

    @server.tool(
        description="Run the agent again in a finished job's worktree and branch with a new "
        "prompt (its session resumed where the agent can). Returns the new job."
    )
    def followup_job(
        ctx: Context[Any, Any],
        job_id: JobId,
        prompt: Annotated[str, Field(min_length=1, description="What to do next")],
        timeout_minutes: Annotated[float | None, Field(gt=0, description="Time limit")] = None,
    ) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        req = FollowupCreate(prompt=prompt, timeout_minutes=timeout_minutes)
        return service.jobs.followup(job_id, req)

    @server.tool(
        description="Land a finished job's branch on its target branch (or `into`). A "
        "conflict is refused and nothing moves. A job token merges only the jobs it created, "
        "and never into the repo's default branch."
    )
    def merge_job(
        ctx: Context[Any, Any],
        job_id: JobId,
        strategy: Annotated[
            MergeStrategy, Field(description="merge, squash, rebase or ff")
        ] = MergeStrategy.MERGE,
        into: Annotated[
            str | None, Field(description="Branch to land on (default: the job's target)")
        ] = None,
        delete_branch: Annotated[bool, Field(description="Delete the job's branch")] = False,
    ) -> ActionResult:
        req = MergeRequest(strategy=strategy, into=into, delete_branch=delete_branch)
        access.merge(principal(ctx), job_id, req)
        return service.control.merge(job_id, req)

    @server.tool(description="Stop the job if it runs, and remove its worktree and branch.")
    def discard_job(ctx: Context[Any, Any], job_id: JobId) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        return service.control.discard(job_id)

    @server.tool(description="Stop a queued or running job; its worktree and branch stay.")
    def cancel_job(ctx: Context[Any, Any], job_id: JobId) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        return service.control.cancel(job_id)

    @server.tool(description="Queue a fresh job with the same inputs as a finished one.")
    def retry_job(ctx: Context[Any, Any], job_id: JobId) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        return service.jobs.retry(job_id)

    @server.tool(
        description="Push a finished job's branch to the repo's remote (default origin). A "
        "refused push is one line, recorded on the job; nothing local changes. "
        "`force_with_lease` overwrites the remote branch only where the job last pushed it."
    )
    def push_job(
        ctx: Context[Any, Any],
        job_id: JobId,
        remote: Annotated[RemoteName, Field(description="The repo's remote")] = "origin",
        force_with_lease: Annotated[
            bool, Field(description="Overwrite the remote branch if it is where the job left it")
        ] = False,
    ) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        return service.forges.push(
            job_id, PushRequest(remote=remote, force_with_lease=force_with_lease)
        )

    @server.tool(
        description="Push a finished job's branch if needed, then open its pull request "
        "(GitHub, Gitea/Forgejo) or merge request (GitLab); again: the same one. Title and "
        "body come from the job's prompt, summary, cost and diffstat."
    )
    def open_pull_request(
        ctx: Context[Any, Any],
        job_id: JobId,
        remote: Annotated[RemoteName, Field(description="The repo's remote")] = "origin",
        draft: Annotated[bool, Field(description="Open it as a draft")] = False,
        base: Annotated[
            str | None, Field(description="The branch to merge into (default: the job's target)")
        ] = None,
        labels: Annotated[
            list[Label] | None, Field(max_length=20, description="Labels to put on it")
        ] = None,
    ) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        req = PullRequestCreate(remote=remote, draft=draft, base=base, labels=labels or [])
        return service.forges.pr(job_id, req)

    @server.tool(
        description="Bring a finished job's branch onto its target branch's current tip "
        "(no checkout; the branch moves by compare-and-swap). On a conflict nothing on the "
        "branch changes and a follow-up job resolves it in the job's worktree (returned)."
    )
    def rebase_job(ctx: Context[Any, Any], job_id: JobId) -> ActionResult:
        access.check_job(principal(ctx), job_id, act=True)
        return service.rebases.rebase(job_id)
