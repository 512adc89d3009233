"""Git processes per trivial job: a count, which does not move with the machine's load.

Every git process the daemon starts costs a fork, an exec and git's own start-up on the
cores the agents share (issue 18). A ``git`` first on the daemon's PATH logs each call
and runs the real one; 40 trivial jobs (``true``) through a warm pool of 2 (grown to no
more than 2), then the pool's refills, are counted. Baseline, the same run: the plain
commands a job stands for (``git worktree add``, ``git add -A``, ``git diff --cached
--quiet``: 3). Git's own children (the ``reset --hard`` inside ``worktree add``) run from
git's exec path and are not counted, in either.
"""

from __future__ import annotations

import collections
import shutil
import stat
from typing import Any

from bench.common import Ctx, target
from bench.daemon import Daemon
from bench.throughput import small_repo

JOBS = 40
PLAIN = 3  # worktree add, add -A, diff --cached --quiet: bench/throughput.py's plain batch
BOUND = 4  # what the daemon reaches (tests/e2e/test_git_processes.py holds it)


def run(ctx: Ctx) -> dict[str, Any]:
    real = shutil.which("git", path=ctx.env.get("PATH"))
    assert real is not None, "no git on PATH"
    bin_dir, log = ctx.dir("gitcount-bin"), ctx.root / "gitcount.log"
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    repo = small_repo(ctx)
    d = Daemon(ctx, "gitcount", pool_size="2", pool_max="2", max_parallel="8")
    d.env["PATH"] = f"{bin_dir}:{ctx.env['PATH']}"
    d.start()
    d.add_repo(repo, "gc")
    d.wait(d.submit("gc", "warm", ["true"])["id"])
    d.settle(timeout=30, min_pause=1.0)
    log.write_text("")
    for i in range(JOBS):
        d.submit("gc", f"g{i}", ["true"])
    d.wait_all_done(timeout=300)
    d.settle(timeout=60, min_pause=1.0)  # the refills behind the last jobs
    d.stop()
    calls = log.read_text().splitlines()
    per_job = len(calls) / JOBS
    kinds = collections.Counter(" ".join(c.split()[:2]) for c in calls)
    return {
        "jobs": JOBS,
        "git_per_job": round(per_job, 2),
        "plain_git_per_job": PLAIN,
        "by_command": {k: round(v / JOBS, 2) for k, v in kinds.most_common()},
        "targets": [target(per_job <= BOUND, f"<= {BOUND} git processes per job ({per_job:.2f})")],
    }


def table(r: dict[str, Any]) -> list[str]:
    by = ", ".join(f"{v} {k}" for k, v in r["by_command"].items())
    return [
        f"daemon: {r['git_per_job']} git processes per trivial job over {r['jobs']} jobs "
        f"(plain commands: {r['plain_git_per_job']})",
        f"per job: {by}",
    ]
