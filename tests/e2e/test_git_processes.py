"""How many git processes a job costs the daemon, counted through a ``git`` on its PATH
that logs each call and runs the real one (issue 18: every process is a fork, an exec
and git's own start-up on the cores the agents share).

The bounds are what the daemon reaches now: a test fails when a git call is added back
to a job's path. (Git's own children, such as the ``reset --hard`` inside ``worktree
add``, run from git's exec path and are not counted.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.daemon_fixture import Daemon
from tests.gitutil import git_counter, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]

# A trivial job through the warm pool: the idle tree, reset when it entered the pool and
# untouched since, needs only its branch (update-ref: no checkout, no clean); then status
# (nothing left over) and the pool's refill behind it (worktree add, checkout). Before
# issue 18's cuts: 7 (with `worktree move` and `worktree lock`, now done by git's files,
# and the recycle's checkout and clean).
TRIVIAL_JOB_GIT_PROCESSES = 4
# A job that leaves a file: the same, plus add, diff --cached, commit and the diff's
# stats against its base. Before: 13 (also rev-parse HEAD and a rev-list, now read from
# the files: the branch's ref, the new commit's parent in its loose object).
LEFTOVER_JOB_GIT_PROCESSES = 8


def _ready_idle_tree(d: Daemon, repo_name: str) -> bool:
    """An idle tree whose checkout is done (its last git call is logged by then)."""
    root = d.state_dir / "pool" / repo_name
    return any((tree / "README.md").exists() for tree in root.glob("idle-*"))


def _calls_per_job(d: Daemon, name: str, log: Path, command: list[str]) -> list[str]:
    wait_until(lambda: _ready_idle_tree(d, name), "an idle tree in the pool")
    log.write_text("")
    job = d.wait(d.submit(name, "count", command=command)["id"])
    assert job["state"] == "succeeded", job
    assert "recycled from the warm pool" in d.api.get(f"/jobs/{job['id']}/log").text
    wait_until(lambda: _ready_idle_tree(d, name), "the pool refilled behind the job")
    return log.read_text().splitlines()


def test_a_job_through_the_warm_pool_costs_few_git_processes(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    bin_dir, log = git_counter(tmp_path)
    d = daemon_factory(
        DISPATCHER_POOL_SIZE="1",
        DISPATCHER_POOL_MAX="1",
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    ).start()
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    trivial = agent("true.sh", "true\n")
    d.wait(d.submit(name, "warm up", command=[trivial])["id"])
    for _ in range(2):
        calls = _calls_per_job(d, name, log, [trivial])
        assert len(calls) <= TRIVIAL_JOB_GIT_PROCESSES, "\n".join(calls)
        assert not any("worktree lock" in call for call in calls), "\n".join(calls)
    writer = agent("write.sh", "echo new > new.txt\n")
    calls = _calls_per_job(d, name, log, [writer])
    assert any(call.startswith("commit ") for call in calls), "\n".join(calls)
    assert len(calls) <= LEFTOVER_JOB_GIT_PROCESSES, "\n".join(calls)
