"""``dispatcher prune`` end to end: a real daemon, real agents, real git.

Jobs end in every finished state (a failing agent, one that commits then fails, a
succeeding one with commits and one without, one killed by a short timeout, one
canceled, one merged); prune with and without filters, then the jobs' states, their
branches (``git for-each-ref``) and worktrees (``git worktree list``) are checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import Daemon
from tests.gitutil import git, init_repo

Agent = Callable[[str, str], str]

COMMIT = "echo work > work.txt && git add work.txt && git commit -qm work\n"


@dataclass
class World:
    d: Daemon
    repo: Path
    name: str
    other: Path
    other_name: str
    jobs: dict[str, dict[str, Any]]  # by role, as they ended (before any prune)

    def state(self, role: str) -> str:
        return str(self.d.job(self.jobs[role]["id"])["state"])

    def has_branch(self, role: str) -> bool:
        job = self.jobs[role]
        repo = self.other if role == "other_failed" else self.repo
        return bool(git(repo, "for-each-ref", f"refs/heads/{job['branch']}"))

    def has_worktree(self, role: str) -> bool:
        job = self.jobs[role]
        repo = self.other if role == "other_failed" else self.repo
        listed = git(repo, "worktree", "list", "--porcelain").splitlines()
        return job["worktree"] is not None and f"worktree {job['worktree']}" in listed

    def prune(self, *args: str, check: bool = True) -> str:
        result = self.d.cli("prune", *args, check=check)
        return result.stdout


@pytest.fixture
def world(daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path) -> World:
    d = daemon_factory(DISPATCHER_MAX_PARALLEL="8", DISPATCHER_MAX_PARALLEL_PER_REPO="8").start()
    repo = init_repo(tmp_path / "app")
    other = init_repo(tmp_path / "other")
    name, other_name = d.add_repo(repo, "app"), d.add_repo(other, "other")
    release = tmp_path / "release"
    scripts = {
        "failed": agent("fail.sh", "exit 1\n"),
        "failed_commits": agent("fail-commit.sh", COMMIT + "exit 1\n"),
        "succeeded_commits": agent("ok-commit.sh", COMMIT),
        "succeeded": agent("ok.sh", "true\n"),
        "timed_out": agent("slow.sh", "sleep 60\n"),
        "canceled": agent("block.sh", f'while [ ! -f "{release}" ]; do sleep 0.05; done\n'),
        "merged": agent("merge-me.sh", COMMIT),
    }
    submitted = {
        role: d.submit(name, role, command=[script], timeout_minutes=1 / 60)
        if role == "timed_out"
        else d.submit(name, role, command=[script])
        for role, script in scripts.items()
    }
    submitted["other_failed"] = d.submit(other_name, "other", command=[scripts["failed"]])
    d.wait(submitted["canceled"]["id"], {"running"})
    d.cli("cancel", str(submitted["canceled"]["id"]))
    jobs = {role: d.wait(job["id"], timeout=60) for role, job in submitted.items()}
    d.cli("merge", str(jobs["merged"]["id"]))
    for role, want in {
        "failed": "failed", "failed_commits": "failed", "succeeded_commits": "succeeded",
        "succeeded": "succeeded", "timed_out": "timed_out", "canceled": "canceled",
        "other_failed": "failed",
    }.items():  # fmt: skip
        assert jobs[role]["state"] == want, (role, jobs[role])
    assert d.job(jobs["merged"]["id"])["state"] == "merged"
    return World(d, repo, name, other, other_name, jobs)


DEFAULT_PRUNED = ("failed", "timed_out", "canceled")  # no commits ahead
UNTOUCHED = ("failed_commits", "succeeded_commits", "succeeded")


def test_prune_by_default_takes_failed_jobs_without_commits_and_merged_leftovers(
    world: World,
) -> None:
    w = world
    for role in (*DEFAULT_PRUNED, *UNTOUCHED):
        assert w.has_branch(role) and w.has_worktree(role), role
    assert w.has_branch("merged")  # `merge` keeps the branch unless asked

    out = w.prune("--repo", w.name)

    for role in DEFAULT_PRUNED:
        job_id = w.jobs[role]["id"]
        assert f"job {job_id} (app, {role}, " in out
        assert w.state(role) == "discarded", role
        assert not w.has_branch(role) and not w.has_worktree(role), role
    for role in UNTOUCHED:
        assert w.state(role) == w.jobs[role]["state"], role
        assert w.has_branch(role) and w.has_worktree(role), role
    assert not w.has_branch("merged") and w.state("merged") == "merged"
    merged_id = w.jobs["merged"]["id"]
    assert f"job {merged_id} (app, merged, " in out and "deleted" in out
    # A failed job with commits is kept, and the line says how to prune it.
    kept = next(
        line for line in out.splitlines() if f"job {w.jobs['failed_commits']['id']} " in line
    )
    assert "1 commit)" in kept and "kept" in kept and "--state failed" in kept
    assert (
        out.splitlines()[-1]
        == "pruned 4 jobs; removed 0 orphan worktrees; kept 1 job (see why above)"
    )
    # The other repo was not asked for.
    assert w.state("other_failed") == "failed" and w.has_branch("other_failed")


def test_dry_run_and_older_than_change_nothing_they_do_not_list(world: World) -> None:
    w = world
    out = w.prune("--dry-run")
    for role in (*DEFAULT_PRUNED, "other_failed"):
        job = w.jobs[role]
        line = next(x for x in out.splitlines() if x.startswith(f"job {job['id']} "))
        assert f"{job['state']}, " in line and " old, 0 commits): would be discarded" in line
    assert f"job {w.jobs['merged']['id']} (app, merged, " in out
    assert "would prune 5 jobs" in out.splitlines()[-1] and "dry run" in out.splitlines()[-1]
    for role in (*DEFAULT_PRUNED, *UNTOUCHED, "other_failed"):
        assert w.state(role) == w.jobs[role]["state"], role
        assert w.has_branch(role) and w.has_worktree(role), role
    assert w.has_branch("merged")
    # Every job finished moments ago: none is older than an hour.
    assert w.prune("--older-than", "1h").splitlines() == [
        "pruned 0 jobs; removed 0 orphan worktrees"
    ]
    for role in (*DEFAULT_PRUNED, "other_failed"):
        assert w.state(role) == w.jobs[role]["state"], role
    listed = w.d.api.post("/jobs/prune", json={"dry_run": True}).json()
    assert {j["id"] for j in listed["jobs"] if j["action"] == "discard"} == {
        w.jobs[r]["id"] for r in (*DEFAULT_PRUNED, "other_failed")
    }


def test_jobs_with_commits_and_succeeded_jobs_go_only_when_their_state_is_asked(
    world: World,
) -> None:
    w = world
    out = w.prune("--state", "failed", "--repo", w.name)
    for role in ("failed", "failed_commits"):
        assert w.state(role) == "discarded" and not w.has_branch(role), role
    assert "timed_out" not in out and w.state("timed_out") == "timed_out"
    assert w.has_branch("merged")  # merged jobs were not asked for either
    w.prune("--state", "succeeded", "--state", "timed_out")
    for role in ("succeeded", "succeeded_commits", "timed_out", "other_failed"):
        if role == "other_failed":
            assert w.state(role) == "failed"
            continue
        assert w.state(role) == "discarded" and not w.has_worktree(role), role
    assert w.state("canceled") == "canceled" and w.has_branch("canceled")


def test_orphan_worktrees_are_tidied(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    orphan = daemon.state_dir / "worktrees" / name / "stray"
    git(repo, "worktree", "add", "-q", "--detach", str(orphan), "main")
    (orphan / "notes.txt").write_text("uncommitted\n")
    dry = daemon.cli("prune", "--dry-run", "--repo", name).stdout
    assert f"orphan worktree {orphan}: would remove" in dry and orphan.is_dir()
    out = daemon.cli("prune", "--repo", name).stdout
    assert f"orphan worktree {orphan}: removed" in out
    assert out.splitlines()[-1] == "pruned 0 jobs; removed 1 orphan worktree"
    assert not orphan.exists() and str(orphan) not in git(repo, "worktree", "list")
    saved = git(repo, "for-each-ref", "--format=%(refname)", "refs/dispatcher/orphans/")
    assert saved.startswith("refs/dispatcher/orphans/stray-")  # its edit kept in a ref


@pytest.mark.parametrize("state", ["running", "queued", "preparing"])
def test_active_jobs_are_never_pruned(daemon: Daemon, state: str) -> None:
    result = daemon.cli("prune", "--state", "failed", "--state", state, check=False)
    assert result.returncode == 1, result
    assert result.stderr == (
        f"dispatcher: {state} jobs are never pruned: cancel them first (prunable states: "
        "succeeded, failed, timed_out, canceled, merged, discarded)\n"
    )


def test_an_unknown_repo_is_refused(daemon: Daemon) -> None:
    result = daemon.cli("prune", "--repo", "no-such-repo", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("dispatcher: ") and "no-such-repo" in result.stderr
