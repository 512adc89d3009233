"""Daemon memory: VmRSS with 100 repos registered and 100,000 jobs in history.

Same-run baseline: a fresh daemon on an empty state dir. Then a daemon on
the API section's prefilled database (100,000 jobs): RSS after start, after
registering 100 small repos (3 files each; their warm pools filled), and after
some API traffic. VmHWM is the peak.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench import api, repos
from bench.common import Ctx, summary, target
from bench.daemon import Daemon

REPOS = 100


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def run(ctx: Ctx) -> dict[str, Any]:
    empty = Daemon(ctx, "memory-empty", pool_size="2").start()
    empty.settle(timeout=30, min_pause=1.0)
    rss_empty = empty.status()
    empty.stop()

    hist = api.prefilled(ctx)
    d = Daemon(ctx, "memory", state_dir=hist["state"], pool_size="2").start()
    d.settle(timeout=30, min_pause=1.0)
    rss_start = d.status()

    t0 = time.perf_counter()
    paths = [
        repos.make_small_repo(ctx.root / "repos" / "many" / f"m{i:03d}", env=ctx.env)
        for i in range(REPOS)
    ]
    made_s = time.perf_counter() - t0
    register: list[float] = []
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        d.add_repo(path, f"m{i:03d}")
        register.append(time.perf_counter() - t0)
    settle_s = d.settle(timeout=120, min_pause=1.0)
    rss_repos = d.status()

    rng = random.Random(7)
    for i in range(500):
        d.http.get("/jobs", params={"limit": 50}).raise_for_status()
        d.http.get(f"/jobs/{rng.randint(1, hist['jobs'])}").raise_for_status()
        if i % 100 == 0:
            d.http.get("/jobs", params={"limit": 500, "before": rng.randint(501, hist["jobs"])})
    list_repos: list[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        d.http.get("/repos").raise_for_status()
        list_repos.append(time.perf_counter() - t0)
    d.settle(timeout=30)
    rss_traffic = d.status()
    d.stop()

    final = mb(rss_traffic["VmRSS"])
    return {
        "rss_mb": {
            "empty daemon (same run)": mb(rss_empty["VmRSS"]),
            "100k jobs, after start": mb(rss_start["VmRSS"]),
            f"+ {REPOS} repos registered": mb(rss_repos["VmRSS"]),
            "+ API traffic (1,000+ requests)": final,
        },
        "peak_mb": mb(rss_traffic["VmHWM"]),
        "threads": rss_traffic.get("Threads"),
        "repos": REPOS,
        "make_repos_s": round(made_s, 1),
        "post_repos": summary(register),
        "pools_settled_s": round(settle_s, 1),
        "get_repos_100": summary(list_repos),
        "targets": [target(final <= 150, f"RSS <= 150 MB ({final} MB)")],
    }


def table(r: dict[str, Any]) -> list[str]:
    lines = [f"{'daemon':<34} | VmRSS"]
    for name, value in r["rss_mb"].items():
        lines.append(f"{name:<34} | {value} MB")
    lines.append(
        f"peak (VmHWM) {r['peak_mb']} MB, {r['threads']} threads; POST /repos p50 "
        f"{r['post_repos']['p50_ms']} ms; GET /repos with {r['repos']} repos p50 "
        f"{r['get_repos_100']['p50_ms']} ms"
    )
    return lines
