"""Tools of teams: show one, add a task, change its blockers, message, read messages,
signal, submit and decide a plan, retry a task; and, with the daemon token, create, list,
shut down and merge teams. Each asks :class:`~dispatcher.service.access.Access` and calls
the very ``service.teams`` method its REST route calls (dispatcher/api/routes/teams.py).

A team member's job token names itself: ``team_id`` may be left out (its own team), a
message's sender is the token's (``lead`` or ``task:<id>``), and a read takes its own
mailbox. A waiting read (``wait_s``) sleeps in a worker thread of its own limiter, so it
holds neither the event loop nor the worker threads every other tool and route share.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio.to_thread
from anyio import CapacityLimiter
from mcp.server.mcpserver import Context
from pydantic import Field

from dispatcher.errors import InvalidInput
from dispatcher.mcp.auth import principal
from dispatcher.mcp.tools import MAX_ID, RepoName
from dispatcher.store import team_models as tm

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service

MAX_WAIT_S = 60.0
"""The longest one read_messages call waits (an agent calls again after it)."""

WAITING_READS = 64
"""Reads that may wait at once (each holds a thread of its own limiter); more queue."""

TeamIdOr = Annotated[
    int | None,
    Field(ge=1, le=MAX_ID, description="The team's id (default: your own team, with a job token)"),
]
TeamId = Annotated[int, Field(ge=1, le=MAX_ID, description="The team's id")]
TaskId = Annotated[int, Field(ge=1, le=MAX_ID, description="A task id of the team")]
OwnTaskId = Annotated[
    int | None, Field(ge=1, le=MAX_ID, description="A task id (default: your own task)")
]
TaskIds = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_ID)]],
    Field(max_length=500, description="Ids of tasks of the team this one waits for"),
]


def register(server: MCPServer[Any], service: Service) -> None:
    access, teams = service.access, service.teams
    limiter: list[CapacityLimiter] = []  # made in the event loop, at the first waiting read

    def _for_task(
        ctx: Context[Any, Any], team_id: int | None, task_id: int | None, what: str
    ) -> tuple[int, int]:
        """The team and task a member speaks for (default: its own), once it may."""
        who = principal(ctx)
        team = access.own_team(who, team_id)
        task = _own(who.task_id, task_id)
        access.own_task(who, team, task, what)
        return team, task

    @server.tool(
        description="Show a team: its goal, state, integration branch, cost, and every task "
        "with its state, job, the blockers it still waits on (waiting_on), signal, plan and "
        "cost. With a job token: your own team (team_id may be left out)."
    )
    def show_team(ctx: Context[Any, Any], team_id: TeamIdOr = None) -> tm.TeamPublic:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        access.team(who, team)
        return teams.show(team)

    @server.tool(
        description="The lead adds a task to its team: it runs as its own agent job in its "
        "own worktree, branched from the integration branch when it starts, which is once "
        "every task in blocked_by is done. Give an agent profile or a command (argv), not "
        "both. Returns the task (its id, for blocked_by of later tasks and task:<id> "
        "messages). A cycle or an unknown blocker is refused."
    )
    def add_task(
        ctx: Context[Any, Any],
        title: Annotated[str, Field(min_length=1, max_length=200, description="One line")],
        prompt: Annotated[str, Field(min_length=1, description="What the member is to do")],
        team_id: TeamIdOr = None,
        agent: Annotated[
            str | None, Field(description="Agent profile (claude, codex, ...); default: daemon's")
        ] = None,
        command: Annotated[
            list[str] | None, Field(min_length=1, description="Run this argv instead of an agent")
        ] = None,
        blocked_by: TaskIds | None = None,
        owns: Annotated[
            list[str] | None, Field(max_length=200, description="Paths only this task changes")
        ] = None,
        requires_plan: Annotated[
            bool, Field(description="The member submits a plan the lead approves first")
        ] = False,
    ) -> tm.TaskPublic:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        access.team(who, team, lead=True, what="add tasks")
        req = tm.TaskCreate(
            title=title, prompt=prompt, agent=agent, command=command,
            blocked_by=blocked_by or [], owns=owns or [], requires_plan=requires_plan,
        )  # fmt: skip
        return teams.add_task(team, req)

    @server.tool(
        description="The lead changes the blockers of a task that still waits (replacing "
        "them): it starts once every one of them is done. A cycle or an unknown blocker is "
        "refused, and so is a task that started already."
    )
    def set_blockers(
        ctx: Context[Any, Any], task_id: TaskId, blocked_by: TaskIds, team_id: TeamIdOr = None
    ) -> tm.TaskPublic:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        access.team(who, team, lead=True, what="change blockers")
        return teams.set_blockers(team, task_id, blocked_by)

    @server.tool(
        description='Send a message to "lead", a member ("task:<id>") or "all" (the lead '
        "and every task still at work, not you). It is stored at once and handed to its "
        "recipient's next read_messages (a waiting one wakes). It is from you: the lead or "
        "task:<your task> (the daemon token: person)."
    )
    def send_message(
        ctx: Context[Any, Any],
        to: Annotated[str, Field(max_length=40, description='"lead", "task:<id>" or "all"')],
        body: Annotated[str, Field(min_length=1, max_length=100_000, description="The text")],
        team_id: TeamIdOr = None,
    ) -> list[tm.MessagePublic]:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        req = tm.MessageCreate.model_validate(
            {"to": to, "body": body, "from": access.sender(who, team)}
        )
        return teams.message(team, req)

    @server.tool(
        description="Take your next messages, oldest first. Pass ack = the id of the last "
        "message you handled: that one and every earlier one are then delivered and never "
        "handed out again; ones you have not acknowledged come again (same id) once "
        "their lease ends, so a lost answer loses nothing. limit=0 with ack only "
        "acknowledges. With wait_s, a read that finds none waits up to that many seconds "
        f"(at most {MAX_WAIT_S:g}) and answers as soon as one is sent; call it again to "
        "keep waiting. Messages from the daemon (a task done, failed, a plan submitted) "
        "come the same way."
    )
    async def read_messages(
        ctx: Context[Any, Any],
        wait_s: Annotated[
            float, Field(ge=0, le=MAX_WAIT_S, description="How long to wait for one")
        ] = 0.0,
        limit: Annotated[
            int, Field(ge=0, le=1000, description="How many at most (0: only acknowledge)")
        ] = 100,
        ack: Annotated[
            int | None,
            Field(ge=0, le=MAX_ID, description="The id of the last message you handled"),
        ] = None,
        team_id: TeamIdOr = None,
        recipient: Annotated[
            str | None,
            Field(max_length=40, description="Daemon token only: whose (default person)"),
        ] = None,
    ) -> list[tm.MessagePublic]:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        box = access.mailbox(who, team, recipient)
        read = partial(teams.read, team, box, wait_s=wait_s, limit=limit, ack=ack)
        if wait_s <= 0 or limit <= 0:  # the shared worker threads, as every sync tool
            return await anyio.to_thread.run_sync(read)
        if not limiter:
            limiter.append(CapacityLimiter(WAITING_READS))
        return await anyio.to_thread.run_sync(read, limiter=limiter[0])

    @server.tool(
        description="A member signals its own task: blocked (the lead and a person are "
        "told), needs-review, or done, with the reason. The lead hears it as a message."
    )
    def signal(
        ctx: Context[Any, Any],
        signal: Annotated[
            Literal["blocked", "needs-review", "done"], Field(description="What you signal")
        ],
        reason: Annotated[str, Field(min_length=1, max_length=10_000, description="Why")],
        task_id: OwnTaskId = None,
        team_id: TeamIdOr = None,
    ) -> tm.TaskPublic:
        team, task = _for_task(ctx, team_id, task_id, "signal")
        return teams.signal(team, task, tm.SignalCreate(signal=signal, reason=reason))

    @server.tool(
        description="A member whose task requires a plan submits it (and changes no files "
        "until it is approved); the lead or a person approves or rejects it, and you hear "
        "the decision as a message or are continued with it."
    )
    def submit_plan(
        ctx: Context[Any, Any],
        plan: Annotated[str, Field(min_length=1, max_length=200_000, description="The plan")],
        task_id: OwnTaskId = None,
        team_id: TeamIdOr = None,
    ) -> tm.TaskPublic:
        team, task = _for_task(ctx, team_id, task_id, "submit plans")
        return teams.submit_plan(team, task, plan)

    @server.tool(
        description="The lead (or a person) approves or rejects a task's submitted plan, "
        "with feedback: approved, the member goes on; rejected, it plans again."
    )
    def decide_plan(
        ctx: Context[Any, Any],
        task_id: TaskId,
        approve: Annotated[bool, Field(description="true: approve; false: reject")],
        feedback: Annotated[str, Field(max_length=100_000, description="For the member")] = "",
        team_id: TeamIdOr = None,
    ) -> tm.TeamAction:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        by = access.decider(who, team)
        return teams.decide_plan(
            team, task_id, tm.PlanDecision(approve=approve, feedback=feedback, by=by)
        )

    @server.tool(
        description="The lead starts a failed or canceled task again: afresh, from the "
        "integration branch's tip, once its blockers are done."
    )
    def retry_task(
        ctx: Context[Any, Any], task_id: TaskId, team_id: TeamIdOr = None
    ) -> tm.TeamAction:
        who = principal(ctx)
        team = access.own_team(who, team_id)
        access.team(who, team, lead=True, what="retry tasks")
        return teams.retry(team, task_id)

    # ------------------------------------------------------------ the daemon token's

    @server.tool(
        description="Create a team in a repo: its integration branch (dispatcher/team-<id>) "
        "and its lead job, told the team tools. Takes the daemon token."
    )
    def create_team(
        ctx: Context[Any, Any],
        repo: RepoName,
        goal: Annotated[str, Field(min_length=1, max_length=100_000, description="The goal")],
        lead_agent: Annotated[str | None, Field(description="The lead's agent profile")] = None,
        lead_command: Annotated[
            list[str] | None, Field(min_length=1, description="Run this argv as the lead")
        ] = None,
        budget_usd: Annotated[
            float | None, Field(gt=0, le=1_000_000, description="Cost cap of all its jobs")
        ] = None,
        max_parallel: Annotated[
            int | None, Field(ge=1, le=1000, description="Members running at once")
        ] = None,
    ) -> tm.TeamPublic:
        access.admin(principal(ctx), "create teams")
        req = tm.TeamCreate(
            repo=repo, goal=goal, lead_agent=lead_agent, lead_command=lead_command,
            budget_usd=budget_usd, max_parallel=max_parallel,
        )  # fmt: skip
        return teams.create(req)

    @server.tool(description="List teams, newest first (of one repo). Takes the daemon token.")
    def list_teams(
        ctx: Context[Any, Any],
        repo: Annotated[str | None, Field(description="Only this repo's teams")] = None,
    ) -> list[tm.TeamPublic]:
        access.admin(principal(ctx), "list teams")
        return teams.listing(repo)

    @server.tool(
        description="Shut a team down: every running member and the lead are canceled, "
        "nothing starts any more, the integration branch stays. Takes the daemon token."
    )
    def shutdown_team(ctx: Context[Any, Any], team_id: TeamId) -> tm.TeamAction:
        access.admin(principal(ctx), "shut teams down")
        return teams.shutdown(team_id)

    @server.tool(
        description="Merge a team's integration branch into the repo's default branch (or "
        "`into`). A conflict is refused and nothing moves. Takes the daemon token."
    )
    def merge_team(
        ctx: Context[Any, Any],
        team_id: TeamId,
        into: Annotated[str | None, Field(description="Default: the repo's default")] = None,
        strategy: Annotated[
            Literal["merge", "squash", "ff"], Field(description="merge, squash or ff")
        ] = "merge",
    ) -> tm.TeamAction:
        access.admin(principal(ctx), "merge teams")
        return teams.merge(team_id, tm.TeamMergeRequest(into=into, strategy=strategy))


def _own(mine: int | None, given: int | None) -> int:
    """The task a member's signal or plan is for: ``given``, else the token's own."""
    if given is not None:
        return given
    if mine is None:
        raise InvalidInput("give task_id: this token is of no task")
    return mine
