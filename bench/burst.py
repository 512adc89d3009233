"""Bursts past the warm pool: how many jobs wait for a cold checkout.

A burst of ``BURST`` trivial jobs is submitted at once to a repo with the
default pool of ``POOL`` trees and the default parallel limits; the jobs are
not discarded (kept for review: the common case), so every tree a job takes
is gone from the pool. Two bursts per daemon, the pool let settle (its refills
done) between them: the first teaches an adaptive pool the demand, the second
is what a repeated burst sees. Arms, in the same run, on the same repo, one
daemon after the other:

* **fixed** (the old behaviour): ``DISPATCHER_POOL_MAX`` equal to the pool
  size, so the pool never grows past it;
* **adaptive**: the default cap (``DISPATCHER_POOL_MAX``, 10: the burst's size, so
  the default is what the target is checked on).

Figures: the jobs whose worktree was a cold checkout (``worktree_source`` in
the job's record), the burst's wall time (first POST to last job ended) and
the mean time a job waited for its worktree.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from bench import repos
from bench.common import Ctx, ratio, target
from bench.daemon import Daemon
from dispatcher.config import Settings

BURST = 10
POOL = 2
DEFAULT_CAP: int = Settings.model_fields["pool_max"].default  # what a user gets


def size(ctx: Ctx) -> int:
    chosen = ctx.options.get("files")
    if chosen:
        return int(max(chosen))
    return 10_000 if ctx.quick else 50_000


def burst(d: Daemon, name: str, label: str) -> dict[str, Any]:
    t0 = time.monotonic()
    ids = [d.submit(name, f"{label} {i}", ["true"])["id"] for i in range(BURST)]
    jobs = [d.wait(job_id, timeout=1800) for job_id in ids]
    wall = time.monotonic() - t0
    failed = [j["id"] for j in jobs if j["state"] != "succeeded"]
    if failed:
        errors = {j["id"]: j.get("error") for j in jobs if j["state"] != "succeeded"}
        raise RuntimeError(f"burst jobs failed: {errors}\n{d.log_tail()}")
    waits = [float(j["worktree_wait_s"] or 0) for j in jobs]
    return {
        "cold": sum(j["worktree_source"] == "cold" for j in jobs),
        "pool": sum(j["worktree_source"] == "pool" for j in jobs),
        "wall_s": round(wall, 2),
        "mean_wait_s": round(sum(waits) / len(waits), 2),
        "max_wait_s": round(max(waits), 2),
    }


def arm(ctx: Ctx, label: str, files: int, cap: int) -> dict[str, Any]:
    repo = repos.repo(ctx, files)
    limit = 120 + files * 0.02  # the pool's refills: up to cap full checkouts
    d = Daemon(ctx, f"burst-{label}", pool_size=str(POOL), pool_max=str(cap)).start()
    try:
        name = d.add_repo(repo, "r")
        d.settle(timeout=limit, min_pause=1.0)
        first = burst(d, name, f"{label} first")  # arms' branches differ: the repo is shared
        t0 = time.monotonic()
        d.settle(timeout=limit, min_pause=1.0)
        refill_s = time.monotonic() - t0
        second = burst(d, name, f"{label} second")
    finally:
        d.stop()
    # Its trees go (faster than `DELETE /repos`, which saves each tree's leftovers first:
    # these jobs left none), so that the next arm starts with none.
    for tree in ("worktrees", "pool"):
        shutil.rmtree(d.state_dir / tree, ignore_errors=True)
    ctx.git(repo, "worktree", "prune")
    return {"arm": label, "cap": cap, "first": first, "second": second,
            "refill_s": round(refill_s, 1)}  # fmt: skip


def run(ctx: Ctx) -> dict[str, Any]:
    files = size(ctx)
    rows = [
        arm(ctx, "fixed", files, POOL),
        arm(ctx, "adaptive", files, DEFAULT_CAP),
    ]
    by = {r["arm"]: r for r in rows}
    fixed, best = by["fixed"]["second"], by["adaptive"]["second"]
    return {
        "files": files,
        "burst": BURST,
        "pool_size": POOL,
        "rows": rows,
        "wall_ratio": ratio(fixed["wall_s"], best["wall_s"]),
        "targets": [
            target(
                best["cold"] == 0 if files >= 50_000 else None,
                f"a burst of {BURST} jobs on 50,000 files with no cold checkout "
                f"({best['cold']} cold on {files:,} files, default cap {DEFAULT_CAP})",
            )
        ],
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['burst']} jobs at once, pool size {result['pool_size']}, "
        f"{result['files']:,} files; jobs kept (not discarded)",
        f"{'arm':<20} | {'cap':>3} | {'1st: cold, wall s':>17} | {'refill s':>8} | "
        f"{'2nd: cold, wall s':>17} | 2nd: mean / max wait s",
    ]
    for r in result["rows"]:
        a, b = r["first"], r["second"]
        lines.append(
            f"{r['arm']:<20} | {r['cap']:>3} | {a['cold']:>4}, {a['wall_s']:>10} | "
            f"{r['refill_s']:>8} | {b['cold']:>4}, {b['wall_s']:>10} | "
            f"{b['mean_wait_s']} / {b['max_wait_s']}"
        )
    lines.append(f"second burst wall time, fixed / adaptive (default cap): {result['wall_ratio']}x")
    return lines
