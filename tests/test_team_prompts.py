"""What a team's agents are told (dispatcher/service/team_prompts.py): the MCP tool names
for agents given the server, how a command reaches it, and for agents without it that
their messages come in their next prompt; never the REST API, which refuses job tokens."""

from __future__ import annotations

import pytest

from dispatcher.service.team_prompts import Voice, lead_prompt, member_prompt, plan_answer
from dispatcher.store.team_models import Team, TeamTask

TEAM = Team(id=3, repo_id=1, goal="ship it", base_sha="0" * 40, branch="dispatcher/team-3")
TASK = TeamTask(id=7, team_id=3, title="write a", prompt="write a.txt", requires_plan=True)
MEMBER_TOOLS = ("show_team", "send_message", "read_messages", "signal", "submit_plan")
LEAD_TOOLS = ("add_task", "set_blockers", "decide_plan", "retry_task")


@pytest.mark.parametrize("voice", ["mcp", "env", "none"])
def test_every_prompt_says_how_its_agent_reaches_the_team(voice: Voice) -> None:
    lead = lead_prompt(TEAM, "app", voice)
    member = member_prompt(TEAM, TASK, voice=voice, messages="- from lead (message 1): hi")
    rejected = plan_answer(TASK, approved=False, feedback="smaller")
    for text in (lead, member, rejected):
        assert "POST /" not in text and "$DISPATCHER_API" not in text and "GET /" not in text
    assert "dispatcher team show|task add|message|read|approve 3" in lead
    assert "submit_plan" in member and "submit_plan" in rejected  # the plan step names the tool
    assert "- from lead (message 1): hi" in member
    if voice == "none":
        for tool in ("read_messages", "add_task", "send_message"):
            assert tool not in lead and tool not in member.split("\n\n")[-1]
        assert "come in the prompt of your next run" in member
        assert "a person adds them" in lead
        return
    for tool in (*MEMBER_TOOLS, *LEAD_TOOLS):
        assert f"- {tool}" in lead or f"; {tool}" in lead, tool
    for tool in MEMBER_TOOLS:
        assert f"- {tool}" in member, tool
    assert not any(tool in member for tool in LEAD_TOOLS)  # only the lead's token may
    assert "as you, lead" in lead and "as you, task:7" in member
    has_env = "DISPATCHER_MCP_URL and DISPATCHER_JOB_TOKEN" in member
    assert has_env is (voice == "env")
    assert "DISPATCHER_JOB_TOKEN=" not in member  # the name of the variable, never a token
