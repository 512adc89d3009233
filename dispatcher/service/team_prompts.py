"""What a team's agents are told: the lead's prompt, a member's, a conflict fix's, a plan's answer.

Text only (no I/O). Task titles, prompts and messages are untrusted text: they
are put into prompts as they are and never reach a shell or a git option; the
branch names quoted here are the daemon's own (``dispatcher/...``).
"""

from __future__ import annotations

from typing import Literal

from dispatcher.store.team_models import Team, TeamTask

Voice = Literal["mcp", "env", "none"]
"""How an agent reaches the daemon: ``mcp``, its profile is given the dispatcher MCP
server (docs/mcp-agents.md); ``env``, a ``command`` job, whose environment holds the
server's URL and its token for an MCP client of its own; ``none``, neither (aider,
goose): its messages come in its next prompt."""

_TOOLS = """The dispatcher MCP server's team tools (the server is given to you as `dispatcher`; with
your own token they act on team {team} as you, {me}, so team_id and task_id may be left out):
- show_team: the tasks, their states, who waits on what (waiting_on), cost
- send_message {{"to": "lead" | "task:<id>" | "all", "body"}}
- read_messages {{"wait_s": 30, "ack": <id of the last message you handled>}}: your next
  messages, oldest first; always pass ack (after your first read) so the ones you handled
  are delivered and not handed to you again (unacknowledged ones come again, same id,
  once their lease ends); wait_s (at most 60) waits for one and answers as soon as it is sent
- signal {{"signal": "blocked" | "needs-review" | "done", "reason"}}: for your own task
- submit_plan {{"plan"}}: when your task requires a plan
"""

_LEAD_TOOLS = """- add_task {{"title", "prompt", "agent" or "command", "blocked_by": [task ids],
  "owns": [paths], "requires_plan": bool}}: returns the task and its id
- set_blockers {{"task_id", "blocked_by"}} of a waiting task; retry_task {{"task_id"}}
- decide_plan {{"task_id", "approve": true | false, "feedback"}}
"""

_ENV = (
    "Your environment has DISPATCHER_MCP_URL and DISPATCHER_JOB_TOKEN: an MCP client "
    "reaches these tools there (streamable HTTP, the token as a bearer token), or "
    "`dispatcher mcp` over stdio."
)

_PERSON = (
    "A person does the same with `dispatcher team show|task add|message|read|approve "
    "{team}` (docs/teams.md)."
)


def _how(team: Team, me: str, voice: Voice) -> str:
    """What an agent is told about reaching its team, by how it can."""
    if voice == "none":
        if me == "lead":
            return (
                "You are not given the daemon's MCP server, so you cannot add tasks or "
                "message yourself: end your run with the tasks you propose (title, prompt, "
                "which tasks each waits for) and a person adds them. Messages sent to you "
                "come in the prompt of your next run. "
                + _PERSON.format(team=team.id)
            )  # fmt: skip
        return (
            "You are not given the daemon's MCP server: messages sent to you come in the "
            "prompt of your next run, oldest first, and the lead is told when you end; say "
            "in your final answer what you did and what is left."
        )
    text = _TOOLS.format(team=team.id, me=me)
    if me == "lead":
        text += _LEAD_TOOLS.format()
    if voice == "env":
        text += _ENV + " Messages not yet read also come in the prompt of your next run.\n"
    return text + _PERSON.format(team=team.id)


def lead_prompt(team: Team, repo: str, voice: Voice) -> str:
    return (
        f"You lead team {team.id} in the repository {repo!r}. The team's goal:\n\n"
        f"{team.goal}\n\n"
        "Split the goal into tasks for members. Each task runs as its own agent job in its "
        f"own git worktree, branched from the team's integration branch {team.branch} as it "
        "is when the task starts; a task starts by itself once every task it is blocked by "
        "is done, and its work is merged into the integration branch when it ends. A merge "
        "conflict becomes a conflict-fix task. A task may require a plan: its member "
        "submits one and you (or a person) approve or reject it. Members can message you "
        "and signal blocked, needs-review or done; read your messages to hear from them "
        "(the daemon tells you there too when a task is done or failed). A person merges "
        "the integration branch.\n\n" + _how(team, "lead", voice)
    )


def member_prompt(team: Team, task: TeamTask, *, voice: Voice, messages: str = "") -> str:
    assert task.id is not None
    parts = [
        f"Team {team.id}, task {task.id}: {task.title}\n\nYou are a member of this team.",
        f"The team's goal: {team.goal}",
        task.prompt,
    ]
    if task.owns:
        parts.append(
            "Change only these paths (other members own the rest): " + ", ".join(task.owns)
        )
    if task.requires_plan and not task.plan_approved:
        parts.append(
            "This task needs its plan approved first. Submit your plan (the submit_plan "
            "tool), change no files, and end your run (or wait for the answer among your "
            "messages). You are continued with the decision."
        )
    parts.append(
        "You work in your own worktree on your own branch; what you commit (or leave "
        f"changed) is merged into the team's integration branch {team.branch} when you end."
    )
    if messages:
        parts.append(messages)
    parts.append(_how(team, f"task:{task.id}", voice))
    return "\n\n".join(parts)


def conflict_prompt(task: TeamTask, branch: str, into: str, files: list[str]) -> str:
    """The prompt of the task that integrates ``task``, whose branch conflicted."""
    listed = "\n".join(f"- {f}" for f in files)
    return (
        f"The work of task {task.id} ({task.title}) conflicts with the team's integration "
        f"branch {into}. Your worktree starts at that branch's tip. Merge the task's branch "
        "into it and resolve the conflicts, keeping what both sides meant:\n\n"
        f"    git merge --no-edit {branch}\n\n"
        f"The conflicting files:\n{listed}\n\n"
        f"What task {task.id} was asked:\n\n{task.prompt}\n\n"
        "Commit the resolved merge; it is merged into the integration branch when you end."
    )


def plan_answer(task: TeamTask, *, approved: bool, feedback: str, messages: str = "") -> str:
    head = f"Team {task.team_id}, task {task.id}: {task.title}\n\n"
    if approved:
        text = head + "Your plan was approved. Carry it out now."
    else:
        text = head + (
            "Your plan was rejected. Submit a revised plan the same way (the submit_plan "
            "tool), change no files, and end your run."
        )
    if feedback:
        text += f"\n\nThe reviewer's feedback:\n{feedback}"
    return text + (f"\n\n{messages}" if messages else "")
