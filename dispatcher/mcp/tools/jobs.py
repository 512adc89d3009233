"""Tools of jobs: create one, list, show, its log's tail, its diff, the review inbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from dispatcher.lifecycle import JobState
from dispatcher.mcp.auth import principal
from dispatcher.mcp.tools import MAX_ID, JobId, RepoName
from dispatcher.process import logpage
from dispatcher.store.models import JobCreate, JobPage, JobPublic

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service

Limit = Annotated[int, Field(ge=1, le=500, description="How many jobs at most")]


class LogTail(BaseModel):
    """Part of a job's log: bytes [start, next_offset) of agent.log, of size bytes."""

    job: int
    text: str
    start: int
    next_offset: int
    size: int


class Diff(BaseModel):
    """A job's changes against its base commit: the stat, and the patch when asked."""

    job: int
    base: str
    head: str
    stat: str
    patch: str | None


def register(server: MCPServer[Any], service: Service) -> None:
    access = service.access

    @server.tool(
        description="Queue a coding-agent job in a registered repo: it runs in its own git "
        "worktree and branch. Returns the job (its id, state, branch). With a job token the "
        "job is in your own repo, is recorded as your child, and starts from your branch "
        "unless `base` says otherwise."
    )
    def create_job(
        ctx: Context[Any, Any],
        repo: RepoName,
        prompt: Annotated[str, Field(min_length=1, description="What the agent is to do")],
        agent: Annotated[
            str | None, Field(description="Agent profile (claude, codex, ...); default: daemon's")
        ] = None,
        command: Annotated[
            list[str] | None, Field(description="Run this argv instead of an agent")
        ] = None,
        base: Annotated[
            str | None, Field(description="Branch or commit to start from (default: see above)")
        ] = None,
        timeout_minutes: Annotated[float | None, Field(gt=0, description="Time limit")] = None,
        max_cost_usd: Annotated[float | None, Field(gt=0, description="Agent budget")] = None,
        skills: Annotated[
            list[str] | None, Field(description="Names of the repo's .dispatcher/skills/*.md")
        ] = None,
    ) -> JobPublic:
        req = JobCreate(
            repo=repo, prompt=prompt, agent=agent, command=command, base=base,
            timeout_minutes=timeout_minutes, max_cost_usd=max_cost_usd, skills=skills,
        )  # fmt: skip
        who = principal(ctx)
        req, parent = access.create(who, req)
        if who.job_id is not None:  # a team's job's child is within its team's limits
            service.teams.check_child(who.job_id)
        return service.jobs.submit(req, parent_id=parent)

    @server.tool(
        description="List jobs, newest first, optionally of one repo and/or in one state. "
        "With a job token: the jobs you created. Page with `before` (next_before of the "
        "previous page)."
    )
    def list_jobs(
        ctx: Context[Any, Any],
        repo: Annotated[str | None, Field(description="Only this repo's jobs")] = None,
        state: Annotated[JobState | None, Field(description="Only jobs in this state")] = None,
        before: Annotated[int | None, Field(ge=1, le=MAX_ID, description="Ids below this")] = None,
        limit: Limit = 20,
    ) -> JobPage:
        who = principal(ctx)
        if repo is not None:
            access.repo(who, repo)  # before the lookup: no word on other repos' existence
        parent = access.listed_parent(who)
        return service.jobs.page(repo=repo, state=state, before=before, limit=limit, parent=parent)

    @server.tool(
        description="Show one job: state, branch, commits ahead, error, agent summary, cost."
    )
    def show_job(ctx: Context[Any, Any], job_id: JobId) -> JobPublic:
        access.check_job(principal(ctx), job_id)
        return service.jobs.get(job_id)

    @server.tool(
        description="The end of a job's log (agent output and the daemon's notes), or the "
        "part from `offset` on (next_offset of an earlier call): to follow a running job."
    )
    def job_log(
        ctx: Context[Any, Any],
        job_id: JobId,
        tail_bytes: Annotated[
            int, Field(ge=1, le=logpage.MAX_LIMIT, description="How many bytes from the end")
        ] = 8000,
        offset: Annotated[
            int | None, Field(ge=0, le=MAX_ID, description="Read from here instead")
        ] = None,
    ) -> LogTail:
        access.check_job(principal(ctx), job_id)
        if offset is None:
            page = service.outputs.log_page(job_id, tail=tail_bytes)
        else:
            page = service.outputs.log_page(job_id, offset=offset, limit=tail_bytes)
        return LogTail(
            job=job_id, text=page.data.decode("utf-8", errors="replace"), start=page.start,
            next_offset=page.next, size=page.size,
        )  # fmt: skip

    @server.tool(
        description="A job's changes against its base commit: the diffstat, and with "
        "full=true the whole patch."
    )
    def job_diff(
        ctx: Context[Any, Any],
        job_id: JobId,
        full: Annotated[bool, Field(description="Include the patch, not only the stat")] = False,
    ) -> Diff:
        access.check_job(principal(ctx), job_id)
        diff = service.outputs.diff(job_id)
        return Diff(
            job=diff.job, base=diff.base, head=diff.head, stat=diff.stat,
            patch=diff.patch if full else None,
        )  # fmt: skip

    @server.tool(
        description="The review inbox: finished jobs with commits that wait for a merge or "
        "a discard, newest first (with a job token: the jobs you created)."
    )
    def review_inbox(ctx: Context[Any, Any], limit: Limit = 20) -> list[JobPublic]:
        return service.jobs.inbox(limit, parent=access.listed_parent(principal(ctx)))
