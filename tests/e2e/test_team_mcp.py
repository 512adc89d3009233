"""A team that coordinates through the MCP server: the real daemon, real git, and fake
agents (tests/fakeagents/team_mcp_agent.py) that use the SDK's own client with their own
job tokens. The lead adds three tasks over MCP (two independent, one blocked on both);
one member asks another and long-polls for the answer; scope refusals come over MCP; and
a person's tools work over stdio (``dispatcher mcp``) too."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from tests.daemon_fixture import Daemon, dispatcher_argv
from tests.e2e.test_mcp import TEAM_TOOLS, call, connect, refusal
from tests.e2e.test_teams import branch_files, create_team, wait_states
from tests.gitutil import git

AGENT = Path(__file__).parents[1] / "fakeagents" / "team_mcp_agent.py"


def result_of(d: Daemon, job_id: int) -> dict[str, Any]:
    """What a fake team agent printed (its TEAM-RESULT line)."""
    log = d.api.get(f"/jobs/{job_id}/log").text
    lines = [line for line in log.splitlines() if line.startswith("TEAM-RESULT ")]
    assert lines, log
    return dict(json.loads(lines[0].removeprefix("TEAM-RESULT ")))


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_a_lead_and_members_coordinate_through_mcp(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    other = create_team(daemon, name, "true")  # another team, out of every member's reach
    resp = daemon.api.post(
        "/teams",
        json={
            "repo": name, "goal": "three files", "max_parallel": 3,
            "lead_command": [sys.executable, str(AGENT), "lead", str(other["id"])],
        },
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    t = resp.json()
    lead_job = daemon.wait(t["lead_job_id"], timeout=120)
    assert lead_job["state"] == "succeeded", lead_job
    lead = result_of(daemon, lead_job["id"])
    tasks = lead["tasks"]
    assert lead["team"] == t["id"]  # show_team without an id: its own team
    assert lead["join_waits_on"] == sorted([tasks["answer"], tasks["ask"]])
    done = wait_states(daemon, t["id"], {i: "done" for i in tasks.values()}, timeout=120)

    jobs = {x["id"]: daemon.job(x["job_id"]) for x in done["tasks"]}
    seen = {role: result_of(daemon, jobs[tasks[role]]["id"]) for role in tasks}
    answer, ask, join = seen["answer"], seen["ask"], seen["join"]

    # The order: join's agent started after both blockers had landed on the team's branch.
    assert {"a.txt", "b.txt"} <= set(join["files"])
    assert not {"a.txt", "b.txt"} & set(answer["files"] + ask["files"])
    for blocker in ("answer", "ask"):
        assert join["started"] > at(jobs[tasks[blocker]]["finished_at"])
    # Every member in a worktree of its own; all three changes on the integration branch.
    assert len({s["cwd"] for s in seen.values()} | {lead["cwd"]}) == 4
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, t["branch"])
    assert git(repo, "show", f"{t['branch']}:a.txt") == "the answer is 42"  # the answer landed
    for job in jobs.values():
        assert (job["state"], job["merged_into"], job["team_id"]) == (
            "merged",
            t["branch"],
            t["id"],
        )

    # The messages: each arrived once, from the sender the token names.
    me_ask, me_answer = f"task:{tasks['ask']}", f"task:{tasks['answer']}"
    assert ask["sent"] == [[me_ask, me_answer]]
    assert answer["got"] == [[me_ask, me_answer, "what is it?"]] and answer["again"] == []
    assert ask["got"] == [[me_answer, me_ask, "the answer is 42"]] and ask["again"] == []
    assert ask["signal"] == "done"
    assert join["team_tasks"] == 3

    # Scope refusals over MCP, one line each.
    member = f"the job token of job {jobs[tasks['answer']]['id']}"
    lead_token = f"the job token of job {lead_job['id']}"
    outside = (
        f"team {other['id']} is outside the scope of {{}}: a job token reaches its own team only"
    )
    admin_only = "{} may not {} teams: that takes the daemon token"
    refusals = {
        "answer": {
            "add_task": f"{member} may not add tasks: only team {t['id']}'s lead may",
            "other_team": outside.format(member),
            "message_other_team": outside.format(member),
            "merge_team": admin_only.format(member, "merge"),
            "list_teams": admin_only.format(member, "list"),
            "read_lead_mailbox": f"{member} reads its own mailbox {me_answer!r} only, not 'lead'",
            "decide_plan": f"{member} may not approve or reject plans: only team {t['id']}'s "
            "lead may",
        },
        "lead": {
            "merge_team": admin_only.format(lead_token, "merge"),
            "shutdown_team": f"{lead_token} may not shut teams down: that takes the daemon token",
            "create_team": admin_only.format(lead_token, "create"),
            "other_team": outside.format(lead_token),
            "signal_for_member": f"{lead_token} may signal for its own task only, not task "
            f"{tasks['answer']}",
        },
    }
    for role, seen_by in (("answer", answer), ("lead", lead)):
        for what, text in refusals[role].items():
            assert seen_by[what] == [True, text], (role, what)
    assert git(repo, "rev-parse", "main") == t["base_sha"]  # nothing merged main

    # A person, over stdio (`dispatcher mcp` with the CLI's token): show, list, merge.
    argv = dispatcher_argv()
    server = StdioServerParameters(command=argv[0], args=[*argv[1:], "mcp"], env=daemon.cli_env)

    async def as_a_person() -> None:
        async with Client(server) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names >= TEAM_TOOLS
            shown = await call(client, "show_team", team_id=t["id"])
            assert {x["state"] for x in shown["tasks"]} == {"done"}
            listed = await call(client, "list_teams", repo=name)
            assert [x["id"] for x in listed["result"]] == [t["id"], other["id"]]
            assert "give team_id" in await refusal(client, "show_team")
            merged = await call(client, "merge_team", team_id=t["id"])
            assert merged["changed"], merged
            stopped = await call(client, "shutdown_team", team_id=other["id"])
            assert stopped["team"]["state"] == "shut_down"

    asyncio.run(as_a_person())
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, "main")


def test_a_waiting_read_over_mcp_wakes_on_send_and_holds_up_nothing(
    daemon: Daemon, repo: Path
) -> None:
    """A person's long-poll read (the daemon token reads the mailbox it names) answers as
    soon as a message is sent, while other calls go on meanwhile."""
    name = daemon.add_repo(repo)
    t = create_team(daemon, name, "true")

    async def scenario() -> None:
        async with (
            connect(daemon.url + "/mcp", daemon.token) as reader,
            connect(daemon.url + "/mcp", daemon.token) as other,
        ):
            waiting = {
                asyncio.create_task(
                    call(reader, "read_messages", team_id=t["id"], recipient="person", wait_s=30)
                )
                for _ in range(2)
            }
            await asyncio.sleep(0.2)  # the reads are waiting in the daemon
            loop = asyncio.get_running_loop()
            for _ in range(5):  # others are served meanwhile
                await call(other, "show_team", team_id=t["id"])
            assert not any(w.done() for w in waiting)
            bodies, ids = [], []
            for body in ("one", "two"):  # each send wakes one waiting read, at once
                began = loop.time()
                await call(other, "send_message", team_id=t["id"], to="person", body=body)
                woke, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                assert loop.time() - began < 10 and len(woke) == 1
                got = woke.pop().result()["result"]
                bodies += [m["body"] for m in got]
                ids += [m["id"] for m in got]
                # Acknowledged alone (limit 0): delivered, so the next read may go on.
                acked = await call(
                    other, "read_messages", team_id=t["id"], recipient="person",
                    ack=ids[-1], limit=0,
                )  # fmt: skip
                assert acked["result"] == []
            assert bodies == ["one", "two"]  # each handed to one read only
            again = await call(reader, "read_messages", team_id=t["id"], recipient="person")
            assert again["result"] == []
            refused = await refusal(reader, "read_messages", team_id=t["id"], wait_s=61)
            assert refused.startswith("invalid arguments: wait_s")

    asyncio.run(scenario())
    daemon.api.post(f"/teams/{t['id']}/shutdown")
