"""``dispatcher team``: create, list, show (the task graph drawn), tasks, messages, plans,
retry, shutdown, merge; each one request of ``/teams`` (docs/teams.md)."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import httpx
import typer

from dispatcher.cli.commands import _client, _print_json, app
from dispatcher.errors import InvalidInput
from dispatcher.teamgraph import draw_graph

team_app = typer.Typer(help="Agent teams: a lead, a task graph, one branch.", no_args_is_help=True)
app.add_typer(team_app, name="team")
task_app = typer.Typer(help="A team's tasks.", no_args_is_help=True)
team_app.add_typer(task_app, name="task")

JsonOpt = Annotated[bool, typer.Option("--json")]


def _argv(command: str | None, flag: str) -> list[str] | None:
    if command is None:
        return None
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidInput(f"cannot split {flag}: {exc}") from None
    if not argv:
        raise InvalidInput(f"{flag} is empty")
    return argv


def _show(team: dict[str, Any]) -> None:
    budget = f" of ${team['budget_usd']:.2f}" if team["budget_usd"] is not None else ""
    head = (team["head"] or "?")[:12]
    typer.echo(
        f"team {team['id']}  {team['state']}  repo {team['repo']}  "
        f"branch {team['branch']} at {head}  cost ${team['cost_usd']:.4f}{budget}"
    )
    typer.echo(f"goal: {team['goal'].strip().splitlines()[0] if team['goal'].strip() else ''}")
    typer.echo(f"lead: job {team['lead_job_id']}")
    if team["held"]:
        typer.echo(f"held: {team['held']}")
    tasks = team["tasks"]
    if not tasks:
        typer.echo("no tasks yet")
        return
    typer.echo("")
    for line in draw_graph(tasks):
        typer.echo(line)
    for t in tasks:
        if t["error"] or t["signal"]:
            typer.echo("")
            break
    for t in tasks:
        if t["signal"]:
            typer.echo(f"#{t['id']} signals {t['signal']}: {t['signal_reason']}")
        if t["error"]:
            typer.echo(f"#{t['id']}: {t['error']}")


@team_app.command("create")
def create(
    repo: str,
    goal: Annotated[str, typer.Option(help="What the team is to achieve")],
    lead_agent: Annotated[str | None, typer.Option(help="The lead's agent profile")] = None,
    lead_command: Annotated[str | None, typer.Option(help="Run this as the lead instead")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Cost cap over all members")] = None,
    max_parallel: Annotated[int | None, typer.Option(help="Members running at once")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a team: its integration branch dispatcher/team-<id> and its lead job."""
    body = {
        "repo": repo, "goal": goal, "lead_agent": lead_agent,
        "lead_command": _argv(lead_command, "--lead-command"), "budget_usd": budget_usd,
        "max_parallel": max_parallel,
    }  # fmt: skip
    with _client() as c:
        team = c.post("/teams", body)
    if as_json:
        _print_json(team)
        return
    typer.echo(f"team {team['id']}: branch {team['branch']}, lead job {team['lead_job_id']}")


@team_app.command("list")
def list_teams(
    repo: Annotated[str | None, typer.Option(help="Only this repo's teams")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List teams, newest first."""
    with _client() as c:
        teams = c.get("/teams", params={"repo": repo} if repo else None)
    if as_json:
        _print_json(teams)
        return
    for t in teams:
        goal = t["goal"].strip().splitlines()[0][:60] if t["goal"].strip() else ""
        typer.echo(f"{t['id']}  {t['state']}  {t['repo']}  ${t['cost_usd']:.4f}  {goal}")


@team_app.command("show")
def show(team_id: int, as_json: JsonOpt = False) -> None:
    """A team: its tasks and their states, who waits on what, its cost; the task graph."""
    with _client() as c:
        team = c.get(f"/teams/{team_id}")
    if as_json:
        _print_json(team)
        return
    _show(team)


@task_app.command("add")
def task_add(
    team_id: int,
    title: str,
    prompt: Annotated[str, typer.Option(help="What the member is to do")],
    agent: Annotated[str | None, typer.Option(help="Agent profile")] = None,
    command: Annotated[str | None, typer.Option(help="Run this program instead")] = None,
    blocked_by: Annotated[
        list[int] | None, typer.Option(help="A task that must be done first (repeatable)")
    ] = None,
    owns: Annotated[list[str] | None, typer.Option(help="A path it owns (repeatable)")] = None,
    requires_plan: Annotated[
        bool, typer.Option("--requires-plan", help="Its plan must be approved first")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a task; it starts when its blockers are done. Prints its id."""
    if agent and command:
        raise InvalidInput("give --agent or --command, not both")
    body = {
        "title": title, "prompt": prompt, "agent": agent,
        "command": _argv(command, "--command"), "blocked_by": blocked_by or [],
        "owns": owns or [], "requires_plan": requires_plan,
    }  # fmt: skip
    with _client() as c:
        task = c.post(f"/teams/{team_id}/tasks", body)
    if as_json:
        _print_json(task)
        return
    typer.echo(str(task["id"]))


@task_app.command("block")
def task_block(
    team_id: int,
    task_id: int,
    blocked_by: Annotated[list[int] | None, typer.Option(help="A blocker (repeatable)")] = None,
) -> None:
    """Set a waiting task's blockers (none: it may start now)."""
    with _client() as c:
        task = c.request(
            "PUT", f"/teams/{team_id}/tasks/{task_id}/blockers",
            json={"blocked_by": blocked_by or []},
        )  # fmt: skip
    typer.echo(f"task {task['id']}: blocked by {task['blocked_by'] or 'nothing'}")


@team_app.command("message")
def message(
    team_id: int,
    text: str,
    to: Annotated[str, typer.Option(help="lead, task:<id>, or all")] = "lead",
    sender: Annotated[str, typer.Option("--from", help="person, lead or task:<id>")] = "person",
) -> None:
    """Send a message to a member, the lead, or everyone."""
    with _client() as c:
        sent = c.post(f"/teams/{team_id}/messages", {"to": to, "from": sender, "body": text})
    typer.echo(f"sent to {', '.join(m['recipient'] for m in sent)}")


@team_app.command("read")
def read(
    team_id: int,
    to: Annotated[str, typer.Option("--as", help="Whose messages: person, lead, task:<id>")] = (
        "person"
    ),
    wait: Annotated[float, typer.Option(help="Wait up to this many seconds for one")] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Take the next messages, print them, then acknowledge what was printed (a read cut
    short before that hands them out again once its lease ends)."""
    url = f"/teams/{team_id}/messages"
    with _client() as c:
        rows = c.get(
            url, params={"to": to, "wait": wait}, timeout=httpx.Timeout(10.0, read=wait + 30)
        )
        if as_json:
            _print_json(rows)
        else:
            for m in rows:
                typer.echo(f"{m['id']}  from {m['sender']}: {m['body']}")
        if rows:
            c.get(url, params={"to": to, "ack": rows[-1]["id"], "limit": 0})


@team_app.command("signal")
def signal(
    team_id: int,
    task_id: int,
    what: Annotated[str, typer.Argument(help="blocked, needs-review or done")],
    reason: Annotated[str, typer.Option(help="Why")],
) -> None:
    """A member's signal: blocked (the lead and a person are told), needs-review, done."""
    with _client() as c:
        c.post(f"/teams/{team_id}/tasks/{task_id}/signal", {"signal": what, "reason": reason})
    typer.echo(f"task {task_id}: {what}")


@team_app.command("plan")
def plan(team_id: int, task_id: int, text: str) -> None:
    """Submit a task's plan for approval."""
    with _client() as c:
        c.post(f"/teams/{team_id}/tasks/{task_id}/plan", {"plan": text})
    typer.echo(f"task {task_id}: plan submitted")


@team_app.command("approve")
def approve(
    team_id: int,
    task_id: int,
    reject: Annotated[bool, typer.Option("--reject", help="Reject it instead")] = False,
    feedback: Annotated[str, typer.Option(help="What the member is told")] = "",
) -> None:
    """Approve (or --reject) a task's plan, with feedback."""
    with _client() as c:
        result = c.post(
            f"/teams/{team_id}/tasks/{task_id}/approve",
            {"approve": not reject, "feedback": feedback, "by": "person"},
        )
    typer.echo(result["message"])


def _act(path: str, body: Any = None) -> None:
    with _client() as c:
        result = c.post(path, body, timeout=httpx.Timeout(10.0, read=None))
    typer.echo(result["message"])


@team_app.command("retry")
def retry(team_id: int, task_id: int) -> None:
    """Start a failed or canceled task again, from the integration branch's tip."""
    _act(f"/teams/{team_id}/tasks/{task_id}/retry")


@team_app.command("shutdown")
def shutdown(team_id: int) -> None:
    """Cancel every running member and the lead; the integration branch stays as it is."""
    _act(f"/teams/{team_id}/shutdown")


@team_app.command("merge")
def merge(
    team_id: int,
    into: Annotated[str | None, typer.Option(help="Branch to merge into (default: main's)")] = None,
    strategy: Annotated[str, typer.Option(help="merge, squash or ff")] = "merge",
) -> None:
    """Merge the team's integration branch into the repo's default branch (or --into)."""
    _act(f"/teams/{team_id}/merge", {"into": into, "strategy": strategy})
