"""Costs that must stay flat with the number of registered repos: threads and restart.

Same-run baseline: a daemon with no repo (its start, its threads). Then, for 1,
50 and 200 registered three-file repos (warm pool on, 2 trees each), a daemon
is started on a state dir where they were registered and their pools filled by
an earlier daemon, and measured:

* **health**: process start -> ``GET /health`` answers 200;
* **idle**: process start -> the daemon is idle (no git process of its own,
  under 20% of a core: :meth:`~bench.daemon.Daemon.settle`), i.e. every
  start-up scan, watch and pool tree reset done; includes the ~0.2 s the settle
  needs to see quiet;
* **threads**: ``Threads`` of ``/proc/<daemon pid>/status`` once idle.

Each start is made three times; the medians are shown (the most threads seen).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import repos
from bench.common import Ctx, ratio, target
from bench.daemon import Daemon

COUNTS = (1, 50, 200)
POOL = "2"
RESTARTS = 3  # per count; the medians are shown (one start varies by seconds on a loaded box)


def _restart(ctx: Ctx, name: str, state: Any) -> dict[str, Any]:
    """Start a daemon on ``state`` RESTARTS times: median seconds to /health and to idle,
    the most threads seen once idle."""
    health, idle, threads = [], [], []
    for i in range(RESTARTS):
        d = Daemon(ctx, f"{name}-{i}", state_dir=state, pool_size=POOL)
        t0 = time.perf_counter()
        d.start(timeout=120)
        health.append(time.perf_counter() - t0)
        d.settle(timeout=300, min_pause=0.5)
        idle.append(time.perf_counter() - t0)
        threads.append(d.status()["Threads"])
        d.stop()
    return {
        "health_s": round(statistics.median(health), 2),
        "idle_s": round(statistics.median(idle), 2),
        "threads": max(threads),
        "health_all_s": [round(h, 2) for h in health],
    }


def run(ctx: Ctx) -> dict[str, Any]:
    empty_state = ctx.dir("repos_scale/empty")
    Daemon(ctx, "scale-empty-first", state_dir=empty_state, pool_size=POOL).start().stop()
    baseline = _restart(ctx, "scale-empty", empty_state)
    rows = []
    made = 0
    paths = []
    for count in COUNTS:
        state = ctx.dir(f"repos_scale/state{count}")
        while made < count:
            paths.append(
                repos.make_small_repo(ctx.root / "repos" / "scale" / f"s{made:03d}", env=ctx.env)
            )
            made += 1
        first = Daemon(ctx, f"scale-{count}-register", state_dir=state, pool_size=POOL).start()
        for i, path in enumerate(paths[:count]):
            first.add_repo(path, f"s{i:03d}")
        first.settle(timeout=600, min_pause=1.0)  # the pools filled
        registered_threads = first.status()["Threads"]
        first.stop()
        row = {"repos": count, "threads_registered": registered_threads}
        row.update(_restart(ctx, f"scale-{count}", state))
        rows.append(row)
    widest = rows[-1]
    extra = widest["threads"] - baseline["threads"]
    return {
        "baseline": baseline,
        "rows": rows,
        "targets": [
            target(
                extra <= 10,
                f"threads at {widest['repos']} repos within 10 of an empty daemon's "
                f"({widest['threads']} vs {baseline['threads']})",
            ),
            target(
                widest["health_s"] <= 2 * max(baseline["health_s"], 0.5),
                f"restart -> /health at {widest['repos']} repos <= 2x an empty daemon's "
                f"({widest['health_s']} s vs {baseline['health_s']} s)",
            ),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    b = r["baseline"]
    lines = [
        f"{'repos':>5} | {'threads':>7} | {'(registering)':>13} | {'-> /health':>10} | "
        f"{'x empty':>7} | {'-> idle':>8} | {'x empty':>7}",
        f"{'0':>5} | {b['threads']:>7} | {'':>13} | {b['health_s']:>8} s | {'1.0':>7} | "
        f"{b['idle_s']:>6} s | {'1.0':>7}",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['repos']:>5} | {row['threads']:>7} | {row['threads_registered']:>13} | "
            f"{row['health_s']:>8} s | {ratio(row['health_s'], b['health_s']):>7} | "
            f"{row['idle_s']:>6} s | {ratio(row['idle_s'], b['idle_s']):>7}"
        )
    lines.append("(0 repos: an empty daemon, the same-run baseline; pool of 2 per repo)")
    return lines
