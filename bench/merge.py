"""Merge conflict pre-check on the 10,000-file repo.

A job changes a file; then main, in the user's checkout, changes the same
file differently. ``POST /jobs/{id}/merge`` must answer 409 (nothing moves);
its time is measured next to plain ``git merge-tree --write-tree`` of the
same two commits, interleaved, in the same run.
"""

from __future__ import annotations

import time
from typing import Any

from bench import repos
from bench.common import Ctx, ratio, sh, summary
from bench.daemon import Daemon

FILES = 10_000
TARGET_FILE = "d0042/f004200.txt"


def calls(ctx: Ctx) -> int:
    return 5 if ctx.quick else 10


def run(ctx: Ctx) -> dict[str, Any]:
    repo = repos.repo(ctx, FILES)
    d = Daemon(ctx, "merge", pool_size="0").start()
    d.add_repo(repo, "r10k")
    job = d.submit("r10k", "conflict", ["sh", "-c", f"printf 'job side\\n' > {TARGET_FILE}"])
    job = d.wait(job["id"])
    if job["state"] != "succeeded" or not job.get("head"):
        raise RuntimeError(f"merge job {job['id']} {job['state']}: {job.get('error')}")
    (repo / TARGET_FILE).write_text("main side\n")
    ctx.git(repo, "commit", "-qam", "main changes the same file")
    main = ctx.git(repo, "rev-parse", "main")
    d.settle(timeout=30, min_pause=0.5)

    api_t: list[float] = []
    plain_t: list[float] = []
    codes: set[int] = set()
    for _ in range(calls(ctx)):
        t0 = time.perf_counter()
        resp = d.http.post(f"/jobs/{job['id']}/merge", json={})
        api_t.append(time.perf_counter() - t0)
        codes.add(resp.status_code)
        t0 = time.perf_counter()
        out = sh(repo, "git", "merge-tree", "--write-tree", main, job["head"], env=ctx.env,
                 check=False)  # fmt: skip
        plain_t.append(time.perf_counter() - t0)
        if out.returncode != 1:
            raise RuntimeError(f"merge-tree did not report a conflict: {out.returncode}")
    if codes != {409}:
        raise RuntimeError(f"merge answered {codes}, not 409")
    a, p = summary(api_t), summary(plain_t)
    return {
        "files": FILES,
        "merge_409": a,
        "merge_tree": p,
        "ratio": ratio(a["p50_ms"], p["p50_ms"]),
        "targets": [],
    }


def table(r: dict[str, Any]) -> list[str]:
    a, p = r["merge_409"], r["merge_tree"]
    return [
        f"{'on ' + format(r['files'], ',') + ' files':<40} | {'p50':>6} | {'p95':>6} | n",
        f"{'POST /jobs/{id}/merge -> 409 conflict':<40} | {a['p50_ms']:>6} | {a['p95_ms']:>6} | "
        f"{a['n']}",
        f"{'plain git merge-tree --write-tree':<40} | {p['p50_ms']:>6} | {p['p95_ms']:>6} | "
        f"{p['n']}",
        f"daemon / plain: {r['ratio']}x (the daemon also resolves the branch, checks ancestry "
        "and answers JSON)",
    ]
