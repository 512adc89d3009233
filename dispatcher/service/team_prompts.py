"""What a team's agents are told: the lead's prompt, a member's, a conflict fix's, a plan's answer.

Text only (no I/O). Task titles, prompts and messages are untrusted text: they
are put into prompts as they are and never reach a shell or a git option; the
branch names quoted here are the daemon's own (``dispatcher/...``).
"""

from __future__ import annotations

from dispatcher.store.team_models import Team, TeamTask

_API = """\
The daemon's team operations (the dispatcher MCP server's team tools where you have
them, else its REST API at $DISPATCHER_API, or the `dispatcher team` command):
- add a task: POST /teams/{team}/tasks {{"title", "prompt", "agent" or "command",
  "blocked_by": [task ids], "owns": [paths], "requires_plan": bool}}
  (`dispatcher team task add {team} TITLE --prompt TEXT --blocked-by ID`)
- message: POST /teams/{team}/messages {{"from": "{me}", "to": "lead" | "task:<id>" | "all",
  "body"}} (`dispatcher team message {team} --to TO TEXT`)
- read your messages (each is handed over once; wait= long-polls up to that many seconds):
  GET /teams/{team}/messages?to={me}&wait=30
- signal: POST /teams/{team}/tasks/<id>/signal {{"signal": "blocked" | "needs-review" |
  "done", "reason"}}
- see the team, its tasks and who waits on what: GET /teams/{team} (`dispatcher team show {team}`)
"""


def lead_prompt(team: Team, repo: str) -> str:
    return (
        f"You lead team {team.id} in the repository {repo!r}. The team's goal:\n\n"
        f"{team.goal}\n\n"
        "Split the goal into tasks for members. Each task runs as its own agent job in its "
        f"own git worktree, branched from the team's integration branch {team.branch} as it "
        "is when the task starts; a task starts by itself once every task it is blocked by "
        "is done, and its work is merged into the integration branch when it ends. A merge "
        "conflict becomes a conflict-fix task. A task may require a plan: its member "
        "submits one and you (or a person) approve or reject it "
        f'(POST /teams/{team.id}/tasks/<id>/approve {{"approve": true|false, "feedback", '
        '"by": "lead"}). Members can message you and signal blocked, needs-review or done; '
        "read your messages to hear from them. A person merges the integration branch.\n\n"
        + _API.format(team=team.id, me="lead")
    )


def member_prompt(team: Team, task: TeamTask, *, messages: str = "") -> str:
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
            "This task needs its plan approved first. Submit your plan "
            f'(POST /teams/{team.id}/tasks/{task.id}/plan {{"plan": TEXT}}), change no '
            "files, and end your run (or wait for the answer among your messages). You "
            "are continued with the decision."
        )
    parts.append(
        "You work in your own worktree on your own branch; what you commit (or leave "
        f"changed) is merged into the team's integration branch {team.branch} when you end."
    )
    if messages:
        parts.append(messages)
    parts.append(_API.format(team=team.id, me=f"task:{task.id}"))
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
            "Your plan was rejected. Submit a revised plan the same way "
            f"(POST /teams/{task.team_id}/tasks/{task.id}/plan), change no files, and end your run."
        )
    if feedback:
        text += f"\n\nThe reviewer's feedback:\n{feedback}"
    return text + (f"\n\n{messages}" if messages else "")
