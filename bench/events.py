"""Event -> job: a commit on main in the user's checkout -> the job its push trigger queued.

The repo commits ``.dispatcher/triggers.yml`` with a push trigger on main
whose agent is ``true``. The daemon runs with ``DISPATCHER_REF_POLL_SECONDS``
high (60), so what is measured is the watchdog path (inotify on the refs, a
0.2 s debounce, ``git for-each-ref``, the trigger match, the job insert).
Commits are made one at a time; each waits for its job to finish. Latency =
the job's ``created_at`` minus the moment ``git commit`` returned.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from bench import repos
from bench.common import Ctx, summary, target
from bench.daemon import Daemon

TRIGGERS = """\
version: 1
defaults: {agent: bot}
agents:
  bot: ["true"]
triggers:
  on-main:
    on:
      push:
        branches: [main]
    prompt: "bench push"
"""


def commits_count(ctx: Ctx) -> int:
    return int(ctx.options.get("commits") or (8 if ctx.quick else 20))


def newest_job(d: Daemon, repo: str) -> dict[str, Any] | None:
    items = d.http.get("/jobs", params={"repo": repo, "limit": 1}).json()["items"]
    return items[0] if items else None


def run(ctx: Ctx) -> dict[str, Any]:
    n = commits_count(ctx)
    path = repos.make_small_repo(
        ctx.root / "repos" / "events", env=ctx.env, **{".dispatcher__triggers.yml": TRIGGERS}
    )
    d = Daemon(ctx, "events", ref_poll_seconds="60").start()
    d.add_repo(path, "ev")
    status = d.http.get("/repos/ev").json()
    if status.get("triggers_error") or not status.get("triggers"):
        raise RuntimeError(f"trigger file not active: {status.get('triggers_error')}")
    d.settle(timeout=30, min_pause=1.0)
    latencies: list[float] = []
    missed = 0
    last = newest_job(d, "ev")
    last_id = last["id"] if last else 0
    for i in range(n):
        (path / "README.md").write_text(f"change {i}\n")
        ctx.git(path, "commit", "-qam", f"change {i}")
        committed = time.time()
        deadline = time.monotonic() + 75  # beyond one ref poll: a missed event still shows
        job = None
        while time.monotonic() < deadline:
            job = newest_job(d, "ev")
            if job is not None and job["id"] > last_id:
                break
            job = None
            time.sleep(0.02)
        if job is None:
            missed += 1
            continue
        last_id = job["id"]
        latencies.append(datetime.fromisoformat(job["created_at"]).timestamp() - committed)
        d.wait(job["id"], timeout=60)
        d.settle(timeout=30, min_pause=0.3)
    s = summary(latencies)
    p50 = s.get("p50_ms")
    return {
        "commits": n,
        "jobs_seen": len(latencies),
        "missed": missed,
        "latency": s,
        "targets": [
            target(
                None if p50 is None else p50 <= 300 and not missed,
                f"event -> job p50 <= 300 ms ({p50} ms)",
            )
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    s = r["latency"]
    return [
        f"commit on main -> job created (push trigger, watchdog path): "
        f"p50 {s.get('p50_ms')} ms, p95 {s.get('p95_ms')} ms, max {s.get('max_ms')} ms "
        f"({r['jobs_seen']}/{r['commits']} commits made a job)"
    ]
