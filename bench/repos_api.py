"""``GET /repos`` and finding one worktree, with 300 retained 1,000-file worktrees.

The retained trees are what the daemon keeps: 300 finished jobs (``true``, on the
1,000-file repo), neither merged nor discarded, each in its own locked worktree
under ``<state>/worktrees/<repo>/<id>``; with the main checkout and the warm pool's
2 trees, the repo has 303 worktrees.

* **GET /repos, GET /repos/{name}**: p50/p95 of the daemon's answers (the disk
  figure read from its background measurement), against the walk of those trees
  that every request used to make (:func:`dispatcher.jobs.diskuse.dir_size` over
  ``<worktrees>/<repo>``, in this process), measured in the same run.
* **refresh**: from a job's end (its agent wrote 100 kB) until ``GET
  /repos/{name}`` shows the new figure.
* **find one worktree** (remove, lock and unlock ask it; merge, discard and
  release go through them): the record read from git's files against ``git
  worktree list`` at 303 trees; and the worktree a branch is checked out in (asked
  before a branch is deleted or a target updated) read from the records' HEAD
  files, against the same list.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import repos
from bench.common import Ctx, ratio, summary, target, timed
from bench.daemon import Daemon
from tests.waiting import wait_until

FILES = 1_000
REPO = "retained"
GROWTH = 100_000  # bytes the refresh job's agent writes


def trees_count(ctx: Ctx) -> int:
    return 100 if ctx.quick else 300


def _retain(d: Daemon, n: int) -> list[dict[str, Any]]:
    """``n`` finished jobs, kept (neither merged nor discarded)."""
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: d.submit(REPO, f"retained {i}", ["true"])["id"], range(n)))
    d.wait_all_done(timeout=60 + 2 * n)
    jobs = [d.http.get(f"/jobs/{i}").json() for i in ids]
    bad = [j["id"] for j in jobs if j["state"] != "succeeded" or not j["worktree"]]
    if bad:
        raise RuntimeError(f"jobs without a retained worktree: {bad[:10]}")
    return jobs


def _requests(d: Daemon, url: str, n: int) -> list[float]:
    d.http.get(url).raise_for_status()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        d.http.get(url).raise_for_status()
        times.append(time.perf_counter() - t0)
    return times


def _refresh_s(d: Daemon, before: int) -> float:
    """Seconds from a job's end (100 kB written) until the repo's figure shows it."""
    job = d.submit(REPO, "grow", ["sh", "-c", f"head -c {GROWTH} /dev/zero > grown.bin"])
    d.wait(job["id"])
    ended = time.perf_counter()
    wait_until(
        lambda: (d.http.get(f"/repos/{REPO}").json()["worktrees_bytes"] or 0) >= before + GROWTH,
        "the figure to count the new job's file",
        timeout=60,
        interval=0.01,
    )
    return time.perf_counter() - ended


def _lookups(repo: Path, trees: list[Path], branches: list[str], n: int) -> dict[str, Any]:
    from dispatcher.git import worktrees

    def per_call(fn: Any, items: list[Any]) -> list[float]:
        return [timed(lambda item=item: fn(repo, item)) for item in items[:n]]

    direct = per_call(worktrees._find_worktree, trees)
    holder = per_call(worktrees.checked_out_in, branches)
    listing = [timed(lambda: worktrees.entries(repo)) for _ in range(n)]
    missing = [f for f in (worktrees._find_worktree(repo, t) for t in trees[:n]) if f is None]
    if missing or any(worktrees.checked_out_in(repo, b) is None for b in branches[:n]):
        raise RuntimeError("a lookup missed a retained worktree")
    return {
        "worktrees": len(worktrees.entries(repo)),
        "find_one": summary(direct),
        "branch_holder": summary(holder),
        "git_worktree_list": summary(listing),
    }


def run(ctx: Ctx) -> dict[str, Any]:
    from dispatcher.jobs.diskuse import dir_size

    n = trees_count(ctx)
    samples = 20 if ctx.quick else 50
    repo = repos.repo(ctx, FILES)
    d = Daemon(ctx, "repos-api", max_parallel="4", max_parallel_per_repo="4").start()
    d.add_repo(repo, REPO)
    t0 = time.perf_counter()
    jobs = _retain(d, n)
    retain_s = time.perf_counter() - t0
    d.settle(timeout=60, min_pause=1.0)
    root = d.state_dir / "worktrees" / REPO
    first = wait_until(
        lambda: d.http.get(f"/repos/{REPO}").json()["worktrees_bytes"],
        "the first figure",
        timeout=120,
    )
    walks = [timed(lambda: dir_size(root)) for _ in range(5)]
    walked = dir_size(root)
    one = summary(_requests(d, f"/repos/{REPO}", samples))
    every = summary(_requests(d, "/repos", samples))
    refresh = _refresh_s(d, first)
    trees = [Path(j["worktree"]) for j in jobs]
    branches = [j["branch"] for j in jobs]
    lookups = _lookups(repo, trees, branches, min(samples, n))
    d.stop()
    walk = summary(walks)
    worst = max(one["p95_ms"], every["p95_ms"])
    find, listing = lookups["find_one"]["p50_ms"], lookups["git_worktree_list"]["p50_ms"]
    return {
        "trees": n,
        "files_per_tree": FILES,
        "retain_s": round(retain_s, 1),
        "bytes": {"figure": first, "walked": walked},
        "walk": walk,
        "get_repo": one,
        "get_repos": every,
        "walk_over_get_repo": ratio(walk["p50_ms"], one["p50_ms"]),
        "refresh_after_job_end_ms": round(refresh * 1000, 1),
        **lookups,
        "list_over_find": ratio(listing, find),
        "targets": [
            target(worst <= 20, f"GET /repos p95 <= 20 ms at {n} retained trees ({worst} ms)"),
            target(
                find * 10 <= listing,
                f"finding one worktree >= 10x cheaper than git worktree list at "
                f"{lookups['worktrees']} trees ({find} vs {listing} ms)",
            ),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    w, one, every = r["walk"], r["get_repo"], r["get_repos"]
    lines = [
        f"{r['trees']} retained trees of {r['files_per_tree']:,} files (made by {r['trees']} "
        f"jobs in {r['retain_s']} s); figure {r['bytes']['figure']:,} B, a walk now "
        f"{r['bytes']['walked']:,} B",
        f"{'':<34} | {'p50 ms':>8} | {'p95 ms':>8} | n",
        f"{'walk of the trees (the old cost)':<34} | {w['p50_ms']:>8} | {w['p95_ms']:>8} "
        f"| {w['n']}",
        f"{'GET /repos/{name}':<34} | {one['p50_ms']:>8} | {one['p95_ms']:>8} | {one['n']}",
        f"{'GET /repos':<34} | {every['p50_ms']:>8} | {every['p95_ms']:>8} | {every['n']}",
        f"walk / GET /repos/{{name}} p50: {r['walk_over_get_repo']}x; a job's end shows in "
        f"the figure {r['refresh_after_job_end_ms']} ms later",
        f"at {r['worktrees']} worktrees:",
    ]
    for key, label in (
        ("find_one", "find one worktree (files)"),
        ("branch_holder", "a branch's worktree (HEAD files)"),
        ("git_worktree_list", "git worktree list (the old cost)"),
    ):
        s = r[key]
        lines.append(f"{label:<34} | {s['p50_ms']:>8} | {s['p95_ms']:>8} | {s['n']}")
    lines.append(f"git worktree list / find one p50: {r['list_over_find']}x")
    return lines
