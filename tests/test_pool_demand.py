"""The warm pool's size follows demand, and released or retired trees come back to it.

Real git repos, a real SQLite store, the real pool's background threads and the real
sweeper; only the pool's clock is injected (its window), so nothing waits for time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.git import refs, worktrees
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.sweeper import Sweeper
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Job, Repo
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g
from tests.waiting import wait_until

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = 100.0


@dataclass
class Env:
    settings: Settings
    store: Store
    path: Path
    pool: WorktreePool
    now: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def repo(self) -> Repo:
        return self.store.repos()[0]

    def idle(self) -> list[Path]:
        return self.pool.idle(self.repo.name)

    def inodes(self) -> set[int]:
        return {t.stat().st_ino for t in self.idle()}

    def on_disk(self) -> list[Path]:
        """The idle trees in the pool's directory (those still being made or removed too)."""
        root = self.settings.state_dir / "pool" / self.repo.name
        return sorted(root.glob("idle-*"))

    def take(self, n: int) -> Path:
        dest = self.settings.worktrees_dir / self.repo.name / str(n)
        dest.parent.mkdir(parents=True, exist_ok=True)
        base = g(self.path, "rev-parse", "main")
        assert self.pool.take(self.repo, dest, f"job/{n}", base)
        return dest


def make_env(
    tmp_path: Path,
    files: dict[str, str] | None = None,
    keep: list[str] | None = None,
    **overrides: object,
) -> Iterator[Env]:
    given: dict[str, object] = {"pool_size": 2, "pool_max": 5, **overrides}
    settings = Settings(
        state_dir=tmp_path / "state", pool_window_seconds=WINDOW,
        **given,  # type: ignore[arg-type]
    )  # fmt: skip
    settings.ensure_dirs()
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    store = Store(url)
    path = init_repo(tmp_path / "repo", files=files or {"README.md": "hello\n", "a.txt": "a\n"})
    store.add_repo(Repo(name="proj", path=str(path), default_branch="main"))
    env = Env(settings, store, path, pool=None)  # type: ignore[arg-type]
    env.pool = WorktreePool(
        settings, store.repos, keep_for=lambda repo: keep or [], clock=lambda: env.now[0]
    )
    env.pool.start()
    try:
        wait_until(lambda: len(env.idle()) == 2, "the pool to fill to its size")
        yield env
    finally:
        env.pool.stop()
        store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


def test_a_burst_grows_the_pools_target_up_to_its_cap_and_a_quiet_window_shrinks_it(
    env: Env,
) -> None:
    repo = env.repo
    assert env.pool.target(repo) == 2
    taken = [env.take(n) for n in range(2)]
    for n in range(2, 4):  # past the pool: these would have waited for a checkout
        env.pool.fill(repo)
        wait_until(env.idle, "a tree refilled")
        taken.append(env.take(n))
    assert env.pool.target(repo) == 4  # four jobs in the window
    env.pool.fill(repo)
    wait_until(lambda: len(env.idle()) == 4, "the pool to grow to the burst's size")
    # Every tree handed out is a clean checkout of its base on its own branch.
    for n, tree in enumerate(taken):
        assert g(tree, "status", "--porcelain", "--ignored") == ""
        assert g(tree, "rev-parse", "--abbrev-ref", "HEAD") == f"job/{n}"
    # A bigger burst stops at the cap.
    for n in range(4, 12):
        env.pool.fill(repo)
        wait_until(env.idle, "a tree refilled")
        env.take(n)
    assert env.pool.target(repo) == 5
    env.pool.fill(repo)
    wait_until(lambda: len(env.idle()) == 5, "the pool at its cap")
    # Half a window later the burst still counts; a whole window later it does not.
    env.now[0] += WINDOW / 2
    env.pool.tick()
    assert len(env.idle()) == 5
    env.now[0] += WINDOW / 2 + 1
    env.pool.tick()
    assert env.pool.target(repo) == 2
    wait_until(lambda: len(env.on_disk()) == 2, "the extra idle trees removed from disk")
    assert len(env.idle()) == 2
    listed = {w.path for w in worktrees.entries(env.path)}
    assert all(t in listed for t in env.on_disk())


def test_the_cap_never_goes_below_the_pool_size(tmp_path: Path) -> None:
    for env in make_env(tmp_path, pool_max=0):  # growth off: the old fixed pool
        for n in range(4):
            env.pool.fill(env.repo)
            wait_until(env.idle, "a tree refilled")
            env.take(n)
        assert env.pool.cap_for(env.repo) == 2
        assert env.pool.target(env.repo) == 2


def test_a_retired_tree_returns_to_the_pool_clean_with_the_jobs_work_kept(env: Env) -> None:
    sweeper = Sweeper(env.settings, env.store, env.pool)
    repo = env.repo
    assert repo.id is not None
    job = env.store.add_job(
        Job(
            repo_id=repo.id, state=JobState.SUCCEEDED, prompt="x", agent="claude",
            base_ref="main", base_sha=g(env.path, "rev-parse", "main"), target_branch="main",
            timeout_s=60.0, finished_at=NOW - timedelta(hours=73),
        ),
        branch_for=lambda jid: f"dispatcher/{jid}-x",
    )  # fmt: skip
    assert job.id is not None
    tree = env.take(job.id)  # as the runner does it: a pool tree on the job's branch
    g(tree, "branch", "-m", f"job/{job.id}", job.branch)
    worktrees.lock(env.path, tree, f"dispatcher job {job.id}")
    env.store.update(job.id, worktree=str(tree))
    committed = commit_file(tree, "work.txt", "the job's commit\n")
    (tree / "README.md").write_text("edited after the job\n")
    (tree / "notes.txt").write_text("untracked\n")
    inode = tree.stat().st_ino

    report = sweeper.sweep(now=NOW)

    assert [r.job_id for r in report.retained] == [job.id]
    assert not tree.exists()
    assert env.store.job(job.id).worktree is None
    # Nothing of the job is lost: its commit on its branch, its leftovers at the ref.
    assert refs.branch_head(env.path, job.branch) == committed
    ref = f"refs/dispatcher/retained/{job.id}"
    assert g(env.path, "show", f"{ref}:notes.txt") == "untracked"
    assert g(env.path, "show", f"{ref}:README.md") == "edited after the job"
    # The tree is back in the pool (a rename keeps its inode), clean, at the default tip.
    wait_until(lambda: inode in env.inodes(), "the retired tree back in the pool")
    back = next(t for t in env.idle() if t.stat().st_ino == inode)
    assert g(back, "status", "--porcelain", "--ignored") == ""
    assert g(back, "rev-parse", "HEAD") == g(env.path, "rev-parse", "main")
    assert g(back, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
    assert len(env.idle()) == 2  # it displaced a tree: the pool stays at its target


def test_a_retained_tree_is_not_taken_and_a_released_one_comes_back_for_a_checkout(
    env: Env,
) -> None:
    repo = env.repo
    kept = env.take(1)  # a finished job's tree, kept for review: the pool does not own it
    (kept / "review.txt").write_text("look at me\n")
    made = list(env.on_disk())
    released = env.take(2)
    inode = released.stat().st_ino
    env.pool.give_back(repo, released)  # the job is done with it: back into the pool
    env.pool.fill(repo)  # what the runner asks for after a take: none needed now
    wait_until(lambda: inode in env.inodes(), "the released tree back in the pool")
    wait_until(lambda: len(env.idle()) == 2, "the pool at its size")
    # One checkout replaced the first take; the released tree replaced the second.
    assert len(set(env.on_disk()) - set(made)) == 2  # the refill and the renamed release
    for n in range(3, 6):
        tree = env.take(n)
        assert os.path.realpath(tree) != os.path.realpath(kept)
        env.pool.fill(repo)
        wait_until(env.idle, "a tree refilled")
    assert (kept / "review.txt").read_text() == "look at me\n"
    assert g(kept, "rev-parse", "--abbrev-ref", "HEAD") == "job/1"


def test_checkouts_queued_for_a_repo_unregistered_meanwhile_leave_no_tree(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path / "state", pool_size=2, pool_max=5)
    settings.ensure_dirs()
    path = init_repo(tmp_path / "repo", files={"README.md": "hello\n"})
    repo = Repo(id=1, name="proj", path=str(path), default_branch="main")
    registered = [repo]
    pool = WorktreePool(settings, lambda: list(registered))
    pool.fill(repo)  # two checkouts queued, the workers not started: as if busy
    registered.clear()
    pool.forget(repo)  # unregistered before the queued checkouts ran
    pool.start()
    try:
        wait_until(lambda: pool._work.empty() and not pool._making.get("proj"), "queue drained")
        assert pool.idle("proj") == []
        listed = g(path, "worktree", "list", "--porcelain").splitlines()
        assert [line for line in listed if line.startswith("worktree ")] == [f"worktree {path}"]
        assert not list((settings.state_dir / "pool").glob("proj/idle-*"))
    finally:
        pool.stop()


def test_a_repo_registered_after_one_was_forgotten_gets_its_pool_even_with_its_id(
    env: Env, tmp_path: Path
) -> None:
    old = env.repo
    env.store.remove_repo(old.id)  # type: ignore[arg-type]
    env.pool.forget(old)
    other = init_repo(tmp_path / "other", files={"README.md": "other\n"})
    new = env.store.add_repo(Repo(name="other", path=str(other), default_branch="main"))
    assert new.id == old.id  # SQLite gives the next row the freed id
    env.pool.fill(new)
    wait_until(lambda: len(env.pool.idle("other")) == 2, "the new repo's pool to fill")
