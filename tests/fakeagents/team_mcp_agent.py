"""A fake team agent that coordinates through the daemon's MCP server the way a real one
would: the SDK's own client at DISPATCHER_MCP_URL with DISPATCHER_JOB_TOKEN (what the
runner gives every agent). Run by the real runner as a team's lead command and its tasks'
commands (tests/e2e/test_team_mcp.py). Its role is argv[1]:

* ``lead OTHER_TEAM``: adds three tasks, "answer" and "ask" (independent) and "join"
  (blocked on both), each run as this script again; tries what the lead may not do.
* ``answerer OTHER_TEAM``: waits (a long-poll read) for a question, answers its sender,
  writes b.txt; tries what a member may not do.
* ``asker ANSWERER``: asks the answerer and waits for the answer; writes a.txt with it.
* ``joiner``: writes c.txt (it starts from both blockers' work).
* ``spawner agent NAME`` or ``spawner command ARGV...``: creates one job through
  ``create_job`` (its child) in its team's repo, and ends (tests/e2e/test_teams.py).

Each prints one line, ``TEAM-RESULT <json>``, of what it saw (never its token).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SCRIPT = str(Path(__file__).resolve())


def _text(result: Any) -> str:
    return str(result.content[0].text) if result.content else ""


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {_text(result)}")
    content = result.structured_content or {}
    return content.get("result", content)


async def refused(client: Client, tool: str, **arguments: Any) -> list[Any]:
    """[is_error, text] of a call its scope should refuse."""
    result = await client.call_tool(tool, arguments)
    return [result.is_error, _text(result)]


async def wait_for_messages(client: Client, deadline_s: float = 60) -> tuple[list[Any], int, int]:
    """The first non-empty long-poll read (daemon notices skipped), how many reads, and
    the id of the last message handed out (each read acknowledges the one before's)."""
    reads, ack, end = 0, None, time.monotonic() + deadline_s
    while time.monotonic() < end:
        reads += 1
        got = await call(client, "read_messages", wait_s=20, ack=ack)
        ack = got[-1]["id"] if got else ack
        got = [m for m in got if m["sender"] != "daemon"]
        if got:
            assert ack is not None
            return got, reads, ack
    raise RuntimeError("no message came")


def run(*args: str) -> list[str]:
    return [sys.executable, SCRIPT, *args]


async def lead(client: Client, other_team: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    team = await call(client, "show_team")
    answer = await call(
        client, "add_task", title="answer", prompt="answer the question; write b.txt",
        command=run("answerer", str(other_team)), owns=["b.txt"],
    )  # fmt: skip
    ask = await call(
        client, "add_task", title="ask", prompt="ask task answer; write a.txt",
        command=run("asker", str(answer["id"])), owns=["a.txt"],
    )  # fmt: skip
    join = await call(
        client, "add_task", title="join", prompt="write c.txt", command=run("joiner"),
        blocked_by=[answer["id"], ask["id"]],
    )  # fmt: skip
    seen["team"] = team["id"]
    seen["tasks"] = {"answer": answer["id"], "ask": ask["id"], "join": join["id"]}
    seen["join_waits_on"] = sorted(join["waiting_on"])
    seen["merge_team"] = await refused(client, "merge_team", team_id=team["id"])
    seen["shutdown_team"] = await refused(client, "shutdown_team", team_id=team["id"])
    seen["create_team"] = await refused(client, "create_team", repo=team["repo"], goal="x")
    seen["other_team"] = await refused(client, "show_team", team_id=other_team)
    seen["signal_for_member"] = await refused(
        client, "signal", signal="done", reason="x", task_id=answer["id"]
    )
    return seen


async def answerer(client: Client, other_team: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    got, seen["reads"], last = await wait_for_messages(client)
    seen["got"] = [[m["sender"], m["recipient"], m["body"]] for m in got]
    await call(client, "send_message", to=got[0]["sender"], body="the answer is 42")
    Path("b.txt").write_text("B\n")
    seen["again"] = await call(client, "read_messages", ack=last)
    me = (await call(client, "show_team"))["id"]
    seen["add_task"] = await refused(client, "add_task", title="x", prompt="x", command=["true"])
    seen["other_team"] = await refused(client, "show_team", team_id=other_team)
    seen["message_other_team"] = await refused(
        client, "send_message", team_id=other_team, to="lead", body="x"
    )
    seen["merge_team"] = await refused(client, "merge_team", team_id=me)
    seen["list_teams"] = await refused(client, "list_teams")
    seen["read_lead_mailbox"] = await refused(client, "read_messages", recipient="lead")
    seen["decide_plan"] = await refused(client, "decide_plan", task_id=1, approve=True)
    return seen


async def asker(client: Client, answerer_task: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    sent = await call(client, "send_message", to=f"task:{answerer_task}", body="what is it?")
    seen["sent"] = [[m["sender"], m["recipient"]] for m in sent]
    got, seen["reads"], last = await wait_for_messages(client)
    seen["got"] = [[m["sender"], m["recipient"], m["body"]] for m in got]
    Path("a.txt").write_text(got[0]["body"] + "\n")
    seen["again"] = await call(client, "read_messages", ack=last)
    seen["signal"] = (await call(client, "signal", signal="done", reason="asked"))["signal"]
    return seen


async def joiner(client: Client) -> dict[str, Any]:
    Path("c.txt").write_text("C\n")
    return {"team_tasks": len((await call(client, "show_team"))["tasks"])}


async def spawner(client: Client, how: str, what: list[str]) -> dict[str, Any]:
    repo = (await call(client, "show_team"))["repo"]
    kind = {"agent": what[0]} if how == "agent" else {"command": what}
    child = await call(client, "create_job", repo=repo, prompt="a child", **kind)
    return {"child": child["id"]}


async def main(role: str, args: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "role": role, "job": int(os.environ["DISPATCHER_JOB_ID"]), "cwd": os.getcwd(),
        "files": sorted(os.listdir(".")), "started": time.time(),
    }  # fmt: skip
    url, token = os.environ["DISPATCHER_MCP_URL"], os.environ["DISPATCHER_JOB_TOKEN"]
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        if role == "lead":
            seen |= await lead(client, int(args[0]))
        elif role == "answerer":
            seen |= await answerer(client, int(args[0]))
        elif role == "asker":
            seen |= await asker(client, int(args[0]))
        elif role == "spawner":
            seen |= await spawner(client, args[0], args[1:])
        else:
            seen |= await joiner(client)
    return seen


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2:]))
    print("TEAM-RESULT " + json.dumps(result), flush=True)
