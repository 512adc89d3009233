"""Teams: a blocker's integration -> its dependant's agent start, and a message send -> the
recipient's waiting read, each beside its plain path measured in the same run.

One daemon with a warm pool of 2 and one team. Three arms, interleaved sample by sample:

* **plain job**: ``POST /jobs`` answered -> the agent's first act (the spawn path);
* **dependant**: task A (writes a file, so it has a commit to integrate) and task B
  blocked on A are added; measured from A's merge into the integration branch (its
  job's ``closed_at``, taken where the merge is recorded) to B's agent's first act:
  the end-of-job hook, the task moves, B's submit, claim, worktree and spawn;
* **message**: a read of the lead's messages waiting (``wait=10``) in a thread, then
  ``POST /teams/{id}/messages`` to the lead: from before the send to the read's answer;
  beside it, a plain round trip of the same read with nothing to wait for;
* **message over MCP**: the same through the MCP server (the SDK's own client, one
  session per sample): ``read_messages`` of the lead waiting (``wait_s=10``), then
  ``send_message`` to the lead: from before the send to the read's answer; beside it,
  ``read_messages`` with nothing to wait for (an MCP tool call's round trip).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import datetime
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench import repos
from bench.common import Ctx, ratio, summary, target
from bench.daemon import Daemon
from bench.spawn import AGENT, spawn_once

WRITER = [sys.executable, "-S", "-c",
          "import os;open('a-'+os.environ['DISPATCHER_JOB_ID']+'.txt','w').write('a')"]  # fmt: skip


def count(ctx: Ctx) -> int:
    return int(ctx.options.get("spawns") or (6 if ctx.quick else 15))


def _ok(resp: Any, what: str) -> Any:
    if resp.status_code >= 300:
        raise RuntimeError(f"{what}: {resp.status_code} {resp.text}")
    return resp.json()


def dependant_once(d: Daemon, team: int, i: int) -> float:
    """Seconds from blocker A's merge into the team's branch to dependant B's agent start."""
    base = f"/teams/{team}/tasks"
    a = _ok(d.http.post(base, json={"title": f"a{i}", "prompt": "a", "command": WRITER}), "A")
    body = {"title": f"b{i}", "prompt": "b", "command": AGENT, "blocked_by": [a["id"]]}
    b = _ok(d.http.post(base, json=body), "B")
    deadline = time.monotonic() + 120
    while True:
        task = _ok(d.http.get(f"{base}/{b['id']}"), "task B")
        if task["state"] in ("done", "failed") and task["job_id"] is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"task B stuck {task['state']}:\n{d.log_tail()}")
        time.sleep(0.05)
    if task["state"] != "done":
        raise RuntimeError(f"task B {task['state']}: {task['error']}")
    a_task = _ok(d.http.get(f"{base}/{a['id']}"), "task A")
    a_job = _ok(d.http.get(f"/jobs/{a_task['job_id']}"), "A's job")
    merged = datetime.fromisoformat(a_job["closed_at"]).timestamp()
    return float((d.marks / str(task["job_id"])).read_text()) - merged


def message_once(d: Daemon, team: int) -> tuple[float, float]:
    """(send -> waiting read answered, a plain read's round trip) in seconds."""
    url = f"/teams/{team}/messages"
    t0 = time.perf_counter()
    _ok(d.http.get(url, params={"to": "lead"}), "plain read")
    plain = time.perf_counter() - t0
    got: list[float] = []
    reader = threading.Thread(
        target=lambda: (
            d.http.get(url, params={"to": "lead", "wait": 10}),
            got.append(time.perf_counter()),
        )
    )
    reader.start()
    time.sleep(0.05)  # the read reaches its wait (there is nothing to see it by)
    sent = time.perf_counter()
    _ok(d.http.post(url, json={"to": "lead", "from": "person", "body": "ping"}), "send")
    reader.join(15)
    if not got:
        raise RuntimeError("the waiting read did not answer")
    return got[0] - sent, plain


async def _mcp_message(url: str, token: str, team: int) -> tuple[float, float]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        args = {"team_id": team, "recipient": "lead"}
        t0 = time.perf_counter()
        plain = await client.call_tool("read_messages", args)
        round_trip = time.perf_counter() - t0
        if plain.is_error:
            raise RuntimeError(f"read_messages: {plain.content}")
        reader = asyncio.create_task(client.call_tool("read_messages", {**args, "wait_s": 10}))
        await asyncio.sleep(0.05)  # the read reaches its wait
        sent = time.perf_counter()
        await client.call_tool("send_message", {"team_id": team, "to": "lead", "body": "ping"})
        got = await reader
        answered = time.perf_counter()
        if got.is_error or not (got.structured_content or {}).get("result"):
            raise RuntimeError(f"the waiting read over MCP got nothing: {got.content}")
        return answered - sent, round_trip


def mcp_message_once(d: Daemon, team: int) -> tuple[float, float]:
    """(send -> waiting read answered, a plain read's round trip) over MCP, in seconds."""
    token = (d.state_dir / "token").read_text().strip()
    return asyncio.run(_mcp_message(f"{d.url}/mcp", token, team))


def run(ctx: Ctx) -> dict[str, Any]:
    n = count(ctx)
    path = repos.make_small_repo(ctx.root / "repos" / "teams", env=ctx.env)
    d = Daemon(ctx, "teams", pool_size="2").start()
    d.add_repo(path, "tm")
    team = _ok(
        d.http.post("/teams", json={"repo": "tm", "goal": "bench", "lead_command": ["true"]}),
        "POST /teams",
    )["id"]
    d.settle(timeout=60, min_pause=0.5)
    plain: list[float] = []
    dependant: list[float] = []
    message: list[float] = []
    round_trip: list[float] = []
    mcp_message: list[float] = []
    mcp_round_trip: list[float] = []
    for i in range(n):
        plain.append(spawn_once(d, "tm", f"plain {i}")[0])
        d.settle(timeout=60, min_pause=0.2)
        dependant.append(dependant_once(d, team, i))
        d.settle(timeout=60, min_pause=0.2)
        sent, rt = message_once(d, team)
        message.append(sent)
        round_trip.append(rt)
        sent, rt = mcp_message_once(d, team)
        mcp_message.append(sent)
        mcp_round_trip.append(rt)
    s_plain, s_dep = summary(plain), summary(dependant)
    s_msg, s_rt = summary(message), summary(round_trip)
    s_mmsg, s_mrt = summary(mcp_message), summary(mcp_round_trip)
    return {
        "samples": n,
        "plain_job": s_plain,
        "dependant": s_dep,
        "message": s_msg,
        "plain_read": s_rt,
        "dependant_vs_plain": ratio(s_dep.get("p50_ms"), s_plain.get("p50_ms")),
        "message_vs_plain_read": ratio(s_msg.get("p50_ms"), s_rt.get("p50_ms")),
        "mcp_message": s_mmsg,
        "mcp_plain_read": s_mrt,
        "mcp_message_vs_mcp_read": ratio(s_mmsg.get("p50_ms"), s_mrt.get("p50_ms")),
        "mcp_message_vs_rest_message": ratio(s_mmsg.get("p50_ms"), s_msg.get("p50_ms")),
        "targets": [
            target(
                s_dep.get("p50_ms", 1e9) <= 300,
                f"blocker integrated -> dependant's agent start p50 <= 300 ms "
                f"({s_dep.get('p50_ms')} ms)",
            ),
            target(
                s_msg.get("p50_ms", 1e9) <= 50,
                f"message send -> waiting read p50 <= 50 ms ({s_msg.get('p50_ms')} ms)",
            ),
            target(
                s_mmsg.get("p50_ms", 1e9) <= 50,
                f"over MCP: send_message -> waiting read_messages p50 <= 50 ms "
                f"({s_mmsg.get('p50_ms')} ms)",
            ),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    def line(label: str, s: dict[str, Any]) -> str:
        return (
            f"{label}: p50 {s.get('p50_ms')} ms, p95 {s.get('p95_ms')} ms, max {s.get('max_ms')} ms"
        )

    return [
        line("plain job, POST /jobs answered -> agent start", r["plain_job"]),
        line("blocker merged -> dependant's agent start", r["dependant"])
        + f" ({r['dependant_vs_plain']}x the plain job)",
        line("plain read of messages (round trip)", r["plain_read"]),
        line("message send -> waiting read answered", r["message"])
        + f" ({r['message_vs_plain_read']}x the plain read)",
        line("over MCP: read_messages with nothing to wait for", r["mcp_plain_read"]),
        line("over MCP: send_message -> waiting read_messages answered", r["mcp_message"])
        + f" ({r['mcp_message_vs_mcp_read']}x the MCP read, "
        f"{r['mcp_message_vs_rest_message']}x the REST send -> read)",
        f"({r['samples']} samples per arm, interleaved)",
    ]
