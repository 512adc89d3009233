"""Supervising running agents: the daemon's threads and CPU with 1 and with 8 agents running.

Agents are ``sleep 300`` (8 slots, one repo), started one at a time, each waited
for until it runs; then all are canceled. Same-run baseline: the daemon with
one agent running.

* **threads**: ``Threads`` of ``/proc/<daemon pid>/status``;
* **idle CPU**: the daemon's own CPU ms over 2 s while the agents run and
  nothing else happens (supervising costs nothing until an agent ends).

A daemon that blocks a thread per running agent shows 7 more threads at 8.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Ctx, target
from bench.daemon import TICK, Daemon, cpu_ticks
from bench.throughput import small_repo
from tests.waiting import wait_until

AGENTS = 8
IDLE_S = 2.0


def _measure(d: Daemon) -> dict[str, Any]:
    user, system = cpu_ticks(d.pid)
    time.sleep(IDLE_S)
    user2, system2 = cpu_ticks(d.pid)
    cpu_ms = (user2 - user + system2 - system) * 1000 / TICK
    return {"threads": d.status()["Threads"], "idle_cpu_ms": round(cpu_ms, 1)}


def run(ctx: Ctx) -> dict[str, Any]:
    d = Daemon(ctx, "supervise", max_parallel=str(AGENTS), max_parallel_per_repo=str(AGENTS))
    d.start()
    name = d.add_repo(small_repo(ctx), "sv")
    ids: list[int] = []
    rows: dict[int, dict[str, Any]] = {}
    for count in range(1, AGENTS + 1):
        job_id = int(d.submit(name, f"sleeper {count}", ["sleep", "300"])["id"])
        ids.append(job_id)
        wait_until(
            lambda job_id=job_id: d.http.get(f"/jobs/{job_id}").json()["state"] == "running",  # type: ignore[misc]
            f"job {job_id} to run",
            120,
            interval=0.02,
        )
        if count in (1, AGENTS):
            d.settle(timeout=60)
            rows[count] = _measure(d)
    for job_id in ids:
        d.http.post(f"/jobs/{job_id}/cancel")
    d.wait_all_done(timeout=120)
    one, many = rows[1], rows[AGENTS]
    return {
        "one": one,
        "many": many,
        "agents": AGENTS,
        "targets": [
            target(
                many["threads"] <= one["threads"] + 1,
                f"threads with {AGENTS} agents running within 1 of one agent's "
                f"({many['threads']} vs {one['threads']})",
            ),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    one, many = r["one"], r["many"]
    return [
        f"{'agents running':>14} | {'threads':>7} | {'extra':>5} | {'idle CPU ms / 2 s':>17}",
        f"{1:>14} | {one['threads']:>7} | {0:>5} | {one['idle_cpu_ms']:>17}",
        f"{r['agents']:>14} | {many['threads']:>7} | {many['threads'] - one['threads']:>5} | "
        f"{many['idle_cpu_ms']:>17}",
        "(1 agent running: the same-run baseline)",
    ]
