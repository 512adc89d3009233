"""Throughput: N trivial jobs (``true``) queued at once, max-parallel 8, on a small repo.

* **daemon**: jobs/s from the first POST (4 client threads post them all) to
  the last job finished, and wall ms per job.
* **plain**: what a job does, with plain commands at the same parallelism
  (8 threads): ``git worktree add -b`` (one at a time: concurrent adds in one
  repo race in git), run ``true`` in it, then the commit check (``git add -A``
  + ``git diff --cached --quiet``). Measured before and after the daemon's run,
  in the same run.
* **per-job daemon overhead** = daemon wall ms/job - plain wall ms/job. The
  daemon's own CPU time per job (its process, not its git and agent children,
  from /proc/<pid>/stat) is shown beside it: on 2 cores both compete for CPU.
* **store transactions per job**: the daemon's read and write transactions
  (``dispatcher_store_transactions_total`` in ``/metrics``, read before and
  after) over the jobs run: a count, which does not move with the machine's load.
"""

from __future__ import annotations

import re
import resource
import shutil
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import repos
from bench.common import Ctx, sh, target
from bench.daemon import TICK, Daemon, cpu_ticks

PARALLEL = 8
SUBMITTERS = 4  # client threads posting the jobs


def jobs_count(ctx: Ctx) -> int:
    return int(ctx.options.get("jobs") or (200 if ctx.quick else 1000))


def small_repo(ctx: Ctx) -> Path:
    path = ctx.root / "repos" / "tp"
    if not path.exists():
        repos.make_repo(path, 100, commits=1, env=ctx.env)
    return path


def plain_batch(ctx: Ctx, repo: Path, n: int, tag: str) -> dict[str, float]:
    """``n`` plain jobs at PARALLEL threads: wall ms/job and children CPU ms/job."""
    scratch = ctx.dir(f"plain-{tag}")
    sha = ctx.git(repo, "rev-parse", "main")
    # Concurrent `git worktree add` in one repo races on .git/worktrees (git 2.39:
    # "failed to read .git/worktrees/wtN/commondir"), so plain adds go one at a time.
    adding = threading.Lock()

    def one(i: int) -> None:
        wt = scratch / f"wt{i}"
        with adding:
            sh(repo, "git", "worktree", "add", "-q", "-b", f"plain-{tag}/{i}", str(wt), sha,
               env=ctx.env)  # fmt: skip
        subprocess.run(["true"], cwd=wt, check=True, timeout=60)
        sh(wt, "git", "add", "-A", env=ctx.env)
        sh(wt, "git", "diff", "--cached", "--quiet", env=ctx.env)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Clean up outside the measurement.
    shutil.rmtree(scratch, ignore_errors=True)
    ctx.git(repo, "worktree", "prune")
    branches = ctx.git(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/plain-{tag}/")
    for ref in branches.split():
        ctx.git(repo, "update-ref", "-d", ref)
    return {"n": n, "wall_ms_per_job": wall * 1000 / n, "cpu_ms_per_job": cpu * 1000 / n}


def _shape(error: str) -> str:
    """An error message with paths, ids and numbers blanked, so alike ones group."""
    text = re.sub(r"/\S+", "<path>", error.strip().splitlines()[-1])
    text = re.sub(r"\b[0-9a-f]{7,40}\b|\b\d+\b", "N", text)
    text = re.sub(r"[0-9a-f]{12}", "N", text)
    return text[:220]


def all_jobs(d: Daemon, repo: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = None
    for _ in range(10_000):  # bounded: 500 a page
        params: dict[str, Any] = {"repo": repo, "limit": 500}
        if before is not None:
            params["before"] = before
        page = d.http.get("/jobs", params=params).json()
        out.extend(page["items"])
        before = page.get("next_before")
        if not before:
            break
    return out


def store_transactions(d: Daemon) -> dict[str, float]:
    """The daemon's store transactions so far by kind (empty: a daemon without the series)."""
    text = d.http.get("/metrics").text
    found = re.findall(r'^dispatcher_store_transactions_total\{kind="(\w+)"\} (\S+)$', text, re.M)
    return {kind: float(n) for kind, n in found}


def ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def run(ctx: Ctx) -> dict[str, Any]:
    n = jobs_count(ctx)
    repo = small_repo(ctx)
    n_plain = min(n, 200)
    plain = [plain_batch(ctx, repo, n_plain // 2, "a")]
    d = Daemon(
        ctx, "throughput", max_parallel=str(PARALLEL), max_parallel_per_repo=str(PARALLEL),
        pool_size="2",
    ).start()  # fmt: skip
    d.add_repo(repo, "tp")
    d.settle(timeout=30, min_pause=1.0)
    trips0 = store_transactions(d)
    own0, kids0 = cpu_ticks(d.pid)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(SUBMITTERS) as pool:  # queued at once: several clients
        list(pool.map(lambda i: d.submit("tp", f"t{i}", ["true"]), range(n)))
    submitted = time.perf_counter() - t0
    d.wait_all_done(timeout=max(120.0, n * 0.5))
    elapsed = time.perf_counter() - t0
    own1, kids1 = cpu_ticks(d.pid)
    trips1 = store_transactions(d)
    jobs = all_jobs(d, "tp")
    d.stop()
    plain.append(plain_batch(ctx, repo, n_plain - n_plain // 2, "b"))

    states: dict[str, int] = {}
    errors: dict[str, int] = {}
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
        if j.get("error"):
            first = _shape(j["error"])
            errors[first] = errors.get(first, 0) + 1
    start_lag = [s - c for j in jobs if (c := ts(j["created_at"])) and (s := ts(j["started_at"]))]
    run_s = [j["duration_s"] for j in jobs if j.get("duration_s") is not None]
    # Does the rate hold as jobs (and their worktrees) pile up? jobs/s per fifth of the run.
    ends = sorted(f for j in jobs if (f := ts(j["finished_at"])))
    fifths = []
    if len(ends) >= 10:
        k = len(ends) // 5
        fifths = [
            round(k / max(1e-3, ends[(q + 1) * k - 1] - ends[q * k - 1 if q else 0]), 1)
            for q in range(5)
        ]
    wall_ms = elapsed * 1000 / n
    plain_ms = statistics.mean(p["wall_ms_per_job"] for p in plain)
    overhead = wall_ms - plain_ms
    jps = n / elapsed
    return {
        "jobs": n,
        "parallel": PARALLEL,
        "seconds": round(elapsed, 2),
        "submit_seconds": round(submitted, 2),
        "jobs_per_s": round(jps, 1),
        "wall_ms_per_job": round(wall_ms, 1),
        "states": states,
        "errors": errors,
        "jobs_per_s_by_fifth": fifths,
        "daemon_cpu_ms_per_job": round((own1 - own0) * 1000 / TICK / n, 1),
        "children_cpu_ms_per_job": round((kids1 - kids0) * 1000 / TICK / n, 1),
        "store_transactions_per_job": {
            kind: round((trips1[kind] - trips0.get(kind, 0.0)) / n, 2) for kind in trips1
        },
        "created_to_started_p50_ms": round(statistics.median(start_lag) * 1000, 1)
        if start_lag
        else None,
        "started_to_finished_p50_ms": round(statistics.median(run_s) * 1000, 1) if run_s else None,
        "plain": [{k: round(v, 1) for k, v in p.items()} for p in plain],
        "plain_wall_ms_per_job": round(plain_ms, 1),
        "overhead_ms_per_job": round(overhead, 1),
        "targets": [
            target(jps >= 25, f">= 25 trivial jobs/s ({jps:.1f})"),
            target(overhead <= 10, f"daemon overhead per job <= 10 ms ({overhead:.1f} ms)"),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    p = r["plain"]
    return [
        f"daemon: {r['jobs']} jobs (`true`, max-parallel {r['parallel']}) in {r['seconds']} s "
        f"= {r['jobs_per_s']} jobs/s = {r['wall_ms_per_job']} ms/job wall "
        f"(POSTs took {r['submit_seconds']} s; states {r['states']})",
        f"plain commands, same parallelism: {r['plain_wall_ms_per_job']} ms/job wall "
        f"(before {p[0]['wall_ms_per_job']}, after {p[-1]['wall_ms_per_job']}; "
        f"CPU of git+true {p[0]['cpu_ms_per_job']} ms/job)",
        f"per-job daemon overhead (daemon wall - plain wall): {r['overhead_ms_per_job']} ms",
        *(f"failed: {n} x {e}" for e, n in r["errors"].items()),
        f"CPU per job: daemon process {r['daemon_cpu_ms_per_job']} ms, its git+agent children "
        f"{r['children_cpu_ms_per_job']} ms",
        f"store transactions per job (its waits for the jobs included): "
        f"{r['store_transactions_per_job'] or 'not counted by this daemon'}",
        f"jobs/s in each fifth of the run (by finish time): {r['jobs_per_s_by_fifth']}",
        f"per job (daemon's timestamps, p50): created->started "
        f"{r['created_to_started_p50_ms']} ms (queue + prepare), started->finished "
        f"{r['started_to_finished_p50_ms']} ms (agent + collect)",
    ]
