"""Spawn latency: POST /jobs answered -> the agent process running in its worktree.

Three arms, interleaved round by round (their order rotates each round) on
the same repo, so they see the same disk and page-cache state:

* **worktree add**: plain ``git worktree add -b`` (what every peer does);
* **cold**: a daemon with ``DISPATCHER_POOL_SIZE=0``;
* **warm**: a daemon with ``DISPATCHER_POOL_SIZE=2``, its pool filled first.

The agent writes ``time.time()`` as its first act. Before every sample each
daemon is let settle (no git process of its own running: the pool refilled
and recycled trees in the background), and each job is discarded after it ends
(its tree goes back to the pool, reset there in the background: a warm take of
an untouched tree then writes only its branch, see docs/design.md, "Taking a
warm tree"). The agent's own start-up (a Python
interpreter) is measured alone in the same run as ``agent floor``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import repos
from bench.common import Ctx, ratio, summary, target
from bench.daemon import Daemon

AGENT = [sys.executable, "-S", "-c",
         "import os,time;open(os.path.join(os.environ['BENCH_MARKS'],"
         "os.environ['DISPATCHER_JOB_ID']),'w').write(repr(time.time()))"]  # fmt: skip

WARM_POOL = 2
RECYCLED = "recycled from the warm pool"


def samples(ctx: Ctx, files: int) -> int:
    if ctx.options.get("spawns"):
        return int(ctx.options["spawns"])
    if files <= 5_000:
        return 7 if ctx.quick else 15
    if files <= 20_000:
        return 5 if ctx.quick else 9
    return 3 if ctx.quick else 4


def settle_timeout(files: int) -> float:
    return 30 + files * 0.002  # a full checkout of the repo, twice, with room to spare


def agent_floor(ctx: Ctx, n: int = 10) -> list[float]:
    """The agent started directly (Popen -> its first act): no daemon, no git."""
    marks = ctx.dir("floor")
    out = []
    for i in range(n):
        env = {**ctx.env, "BENCH_MARKS": str(marks), "DISPATCHER_JOB_ID": f"f{i}"}
        t0 = time.time()
        subprocess.run(AGENT, env=env, check=True, timeout=30)
        out.append(float((marks / f"f{i}").read_text()) - t0)
    return out


def worktree_add(ctx: Ctx, repo: Path, scratch: Path, i: int) -> float:
    path = scratch / f"wt{i}"
    t0 = time.perf_counter()
    ctx.git(repo, "worktree", "add", "-q", "-b", f"bench/{i}", str(path), "main")
    elapsed = time.perf_counter() - t0
    ctx.git(repo, "worktree", "remove", "--force", str(path))
    ctx.git(repo, "branch", "-q", "-D", f"bench/{i}")
    return elapsed


def spawn_once(d: Daemon, repo_name: str, prompt: str) -> tuple[float, bool]:
    """Seconds from POST /jobs answered to the agent's first act; whether it was recycled."""
    resp = d.http.post("/jobs", json={"repo": repo_name, "prompt": prompt, "command": AGENT})
    accepted = time.time()
    if resp.status_code != 201:
        raise RuntimeError(f"POST /jobs: {resp.status_code} {resp.text}")
    job_id = resp.json()["id"]
    job = d.wait(job_id)
    mark = d.marks / str(job_id)
    if job["state"] != "succeeded" or not mark.exists():
        raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error')}\n{d.log_of(job_id)}")
    started = float(mark.read_text())
    recycled = RECYCLED in d.log_of(job_id)
    resp = d.http.post(f"/jobs/{job_id}/discard")
    if resp.status_code != 200:
        raise RuntimeError(f"discard {job_id}: {resp.status_code} {resp.text}")
    return started - accepted, recycled


def run(ctx: Ctx) -> dict[str, Any]:
    cold = Daemon(ctx, "spawn-cold", pool_size="0").start()
    warm = Daemon(ctx, "spawn-warm", pool_size=str(WARM_POOL)).start()
    both = (cold, warm)
    floor = agent_floor(ctx)
    rows = []
    for files in repos.sizes(ctx):
        repo = repos.repo(ctx, files)
        name = f"r{files}"
        for d in both:
            d.add_repo(repo, name)
        limit = settle_timeout(files)
        t0 = time.monotonic()
        for d in both:
            d.settle(timeout=limit, min_pause=1.0)
        fill_s = time.monotonic() - t0
        scratch = ctx.dir(f"scratch-{files}")
        times: dict[str, list[float]] = {"worktree_add": [], "cold": [], "warm": []}
        settled: list[float] = []
        recycled = 0
        arms = list(times)
        n = samples(ctx, files)
        for i in range(n):
            for arm in arms[i % 3 :] + arms[: i % 3]:
                settled.append(sum(d.settle(timeout=limit) for d in both))
                if arm == "worktree_add":
                    times[arm].append(worktree_add(ctx, repo, scratch, i))
                elif arm == "cold":
                    times[arm].append(spawn_once(cold, name, "cold")[0])
                else:
                    elapsed, was_recycled = spawn_once(warm, name, "warm")
                    times[arm].append(elapsed)
                    recycled += was_recycled
        base, c, w = (summary(times[a]) for a in arms)
        rows.append(
            {
                "files": files,
                "worktree_add": base,
                "cold": c,
                "warm": w,
                "ratio_cold": ratio(base["p50_ms"], c["p50_ms"]),
                "ratio_warm": ratio(base["p50_ms"], w["p50_ms"]),
                "warm_recycled": f"{recycled}/{n}",
                "pool_fill_s": round(fill_s, 1),
                "settle_mean_s": round(sum(settled) / len(settled), 2),
            }
        )
        for d in both:  # keep the next size's measurements free of this one's trees
            d.http.delete(f"/repos/{name}")
            d.settle(timeout=limit)
    floor_s = summary(floor)
    return {
        "rows": rows,
        "agent_floor": floor_s,
        "warm_pool_size": WARM_POOL,
        "targets": targets(rows),
        "note": "spawn = POST /jobs answered -> agent's first act (agent floor included)",
    }


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["files"]: r for r in rows}
    r50, r10 = by.get(50_000), by.get(10_000)
    return [
        target(
            None if r50 is None else (r50["ratio_warm"] or 0) >= 10,
            "warm spawn >= 10x faster than `git worktree add` on 50,000 files"
            + ("" if r50 is None else f" ({r50['ratio_warm']}x)"),
        ),
        target(
            None if r10 is None else r10["warm"]["p50_ms"] <= 50,
            "warm spawn p50 <= 50 ms on 10,000 files"
            + ("" if r10 is None else f" ({r10['warm']['p50_ms']} ms)"),
        ),
    ]


def table(result: dict[str, Any]) -> list[str]:
    head = (
        f"{'files':>7} | {'worktree add p50/p95':>21} | {'cold p50/p95':>17} | "
        f"{'warm p50/p95':>15} | {'add/cold':>8} | {'add/warm':>8} | recycled"
    )
    lines = [head]
    for r in result["rows"]:
        b, c, w = r["worktree_add"], r["cold"], r["warm"]
        lines.append(
            f"{r['files']:>7,} | {b['p50_ms']:>9} / {b['p95_ms']:<9} | "
            f"{c['p50_ms']:>7} / {c['p95_ms']:<7} | {w['p50_ms']:>6} / {w['p95_ms']:<6} | "
            f"{r['ratio_cold']:>7}x | {r['ratio_warm']:>7}x | {r['warm_recycled']}"
        )
    f = result["agent_floor"]
    lines.append(
        f"(ms; n per size: {', '.join(str(r['warm']['n']) for r in result['rows'])}; "
        f"agent floor, its Python start-up alone: p50 {f['p50_ms']} ms, included above)"
    )
    return lines
