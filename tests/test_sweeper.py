"""The sweeper against real git worktrees and a real SQLite store (nothing mocked).

Every test builds a repo in tmp_path, registers it, makes worktrees the way the
runner does (``worktrees.add`` under ``<state>/worktrees/<repo>/<job id>``)
and sweeps at an injected ``now``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.git import names, refs, worktrees
from dispatcher.jobs.sweeper import (
    VANISHED,
    Orphan,
    Sweeper,
    SweepReport,
    ref_component,
    retention_due,
    stamp,
    unclaimed,
)
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Job, Repo
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g

S = JobState
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "20240501T120000Z"


@dataclass
class Env:
    settings: Settings
    store: Store
    repo: Path
    repo_id: int
    sweeper: Sweeper

    @property
    def root(self) -> Path:
        return self.settings.worktrees_dir / "proj"

    @property
    def lost_found(self) -> Path:
        return self.settings.state_dir / "lost+found" / "proj"

    def job(self, state: JobState, *, finished: timedelta | None = None) -> Job:
        """A job row in ``state`` (finished ``finished`` before NOW), no worktree yet."""
        job = self.store.add_job(
            Job(
                repo_id=self.repo_id,
                state=state,
                prompt="fix it",
                agent="claude",
                base_ref="main",
                base_sha=g(self.repo, "rev-parse", "HEAD"),
                target_branch="main",
                timeout_s=600.0,
                finished_at=NOW - finished if finished is not None else None,
            ),
            branch_for=lambda jid: f"dispatcher/{jid}-fix-it",
        )
        assert job.id is not None
        return job

    def job_with_worktree(
        self, state: JobState, *, finished: timedelta | None = None, lock: bool = False
    ) -> tuple[int, Path]:
        """A job whose worktree exists, made and recorded as the runner does it."""
        job = self.job(state, finished=finished)
        assert job.id is not None
        path = self.root / str(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        worktrees.add(self.repo, path, job.branch, "HEAD")
        self.store.update(job.id, worktree=str(path))
        if lock:
            worktrees.lock(self.repo, path, f"dispatcher job {job.id}")
        return job.id, path

    def orphan(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        worktrees.add(self.repo, path, f"stray/{name}", "HEAD")
        return path

    def refs(self) -> dict[str, str]:
        return refs.for_each_ref(self.repo, "refs/dispatcher/")

    def worktrees(self) -> list[Path]:
        return [w.path for w in worktrees.entries(self.repo)[1:]]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(state_dir=tmp_path / "state", worktree_retention_hours=72)
    settings.ensure_dirs()
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    store = Store(url)
    repo = init_repo(tmp_path / "repo", files={"README.md": "hello\n", "a.txt": "a\n"})
    row = store.add_repo(Repo(name="proj", path=str(repo), default_branch="main"))
    assert row.id is not None
    try:
        yield Env(settings, store, repo, row.id, Sweeper(settings, store))
    finally:
        store.close()


def acted(report: SweepReport) -> bool:
    """True if the sweep changed anything on disk or in the database."""
    return bool(report.orphans or report.vanished or report.locked or report.retained)


def tree_of(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes), ``.git`` file included."""
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = Path(dirpath) / name
            out[str(full.relative_to(path))] = full.read_bytes()
    return out


# ---------------------------------------------------------------- orphans


def test_orphan_with_changes_is_saved_to_a_ref_then_removed(env: Env) -> None:
    path = env.orphan("stray")
    (path / "README.md").write_text("modified\n")
    (path / "new.txt").write_text("untracked\n")

    report = env.sweeper.sweep(now=NOW)

    ref = f"refs/dispatcher/orphans/stray-{STAMP}"
    assert report.orphans == [Orphan("proj", path, ref=ref)]
    assert report.pruned == ["proj"]
    assert not report.errors
    assert not path.exists()
    assert env.worktrees() == []
    assert g(env.repo, "show", f"{ref}:new.txt") == "untracked"
    assert g(env.repo, "show", f"{ref}:README.md") == "modified"
    assert refs.branch_head(env.repo, "stray/stray") is not None  # its branch is kept
    assert g(env.repo, "log", "-1", "--format=%an", ref) == env.settings.commit_author_name


def test_clean_orphan_is_removed_without_a_ref(env: Env) -> None:
    path = env.orphan("clean")
    report = env.sweeper.sweep(now=NOW)
    assert report.orphans == [Orphan("proj", path)]
    assert not path.exists()
    assert env.refs() == {}
    assert env.worktrees() == []


def test_clean_orphan_on_a_detached_head_keeps_its_commits(env: Env) -> None:
    path = env.root / "detached"
    path.parent.mkdir(parents=True)
    worktrees.add_detached(env.repo, path, "HEAD")
    work = commit_file(path, "c.txt", "only here\n")
    report = env.sweeper.sweep(now=NOW)
    ref = f"refs/dispatcher/orphans/detached-{STAMP}"
    assert report.orphans == [Orphan("proj", path, ref=ref)]
    assert env.refs() == {ref: work}
    assert not path.exists()


def test_corrupted_orphan_goes_to_lost_found_intact(env: Env) -> None:
    path = env.orphan("broken")
    (path / "notes.txt").write_text("precious\n")
    (path / ".git").write_bytes(b"\x00\x01 not a gitdir line")
    before = tree_of(path)

    report = env.sweeper.sweep(now=NOW)

    target = env.lost_found / f"broken-{STAMP}"
    assert report.orphans == [Orphan("proj", path, moved_to=target)]
    assert not report.errors
    assert not path.exists()
    assert tree_of(target) == before
    assert env.worktrees() == []  # git's record of it is gone
    assert env.refs() == {}


def test_half_made_orphan_without_git_goes_to_lost_found(env: Env) -> None:
    path = env.root / "half"
    path.mkdir(parents=True)
    (path / "file.txt").write_text("x\n")
    report = env.sweeper.sweep(now=NOW)
    (orphan,) = report.orphans
    assert orphan.moved_to == env.lost_found / f"half-{STAMP}"
    assert (orphan.moved_to / "file.txt").read_text() == "x\n"


def test_orphan_holding_a_nested_repo_is_saved_and_kept_in_lost_found(env: Env) -> None:
    path = env.orphan("nested")
    init_repo(path / "vendor" / "lib", files={"lib.txt": "cloned\n"})
    (path / "mine.txt").write_text("mine\n")

    report = env.sweeper.sweep(now=NOW)

    (orphan,) = report.orphans
    assert orphan.ref == f"refs/dispatcher/orphans/nested-{STAMP}"
    assert orphan.moved_to == env.lost_found / f"nested-{STAMP}"
    assert (orphan.moved_to / "vendor" / "lib" / "lib.txt").read_text() == "cloned\n"
    assert g(env.repo, "show", f"{orphan.ref}:mine.txt") == "mine"
    assert env.worktrees() == []


def test_two_sweeps_in_the_same_second_get_distinct_refs(env: Env) -> None:
    first = env.orphan("same")
    (first / "u.txt").write_text("1\n")
    env.sweeper.sweep(now=NOW)
    second = env.root / "same"
    worktrees.add(env.repo, second, "stray/same2", "HEAD")
    (second / "u.txt").write_text("2\n")
    env.sweeper.sweep(now=NOW)
    ref = f"refs/dispatcher/orphans/same-{STAMP}"
    assert set(env.refs()) == {ref, f"{ref}-2"}
    assert g(env.repo, "show", f"{ref}:u.txt") == "1"
    assert g(env.repo, "show", f"{ref}-2:u.txt") == "2"


def test_directories_claimed_by_jobs_are_not_orphans(env: Env) -> None:
    ids = {}
    for state in S:
        ids[state], _ = env.job_with_worktree(state, finished=timedelta(hours=1))
    # The runner made this one's worktree but has not recorded the path yet.
    preparing = env.job(S.PREPARING)
    half = env.root / str(preparing.id)
    worktrees.add(env.repo, half, preparing.branch, "HEAD")

    report = env.sweeper.sweep(now=NOW)

    assert report.orphans == []
    assert not report.errors
    assert half.is_dir()
    assert len(env.worktrees()) == len(S) + 1


def test_repo_whose_path_vanished_is_skipped(env: Env, tmp_path: Path) -> None:
    path = env.orphan("stray")
    moved = tmp_path / "moved-away"
    env.repo.rename(moved)
    report = env.sweeper.sweep(now=NOW)
    assert report.skipped == [f"proj: {env.repo} no longer holds a repository"]
    assert report.orphans == []
    assert path.is_dir()


# ---------------------------------------------------------------- vanished worktrees


def test_finished_job_whose_worktree_was_deleted(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.SUCCEEDED, finished=timedelta(hours=1), lock=True)
    branch = env.store.job(job_id).branch
    shutil.rmtree(path)

    report = env.sweeper.sweep(now=NOW)

    job = env.store.job(job_id)
    assert job.worktree is None
    assert job.error == VANISHED
    assert job.state is S.SUCCEEDED
    assert [v.job_id for v in report.vanished] == [job_id]
    assert refs.branch_head(env.repo, branch) is not None
    assert env.worktrees() == []  # the locked record is dropped too
    assert VANISHED in (env.settings.jobs_dir / str(job_id) / "agent.log").read_text()


def test_vanished_worktree_keeps_an_earlier_error(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.FAILED, finished=timedelta(hours=1))
    env.store.update(job_id, error="agent ended with exit code 1")
    shutil.rmtree(path)
    env.sweeper.sweep(now=NOW)
    job = env.store.job(job_id)
    assert (job.worktree, job.error) == (None, "agent ended with exit code 1")


def test_finished_job_with_a_corrupted_worktree(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.CANCELED, finished=timedelta(hours=1))
    (path / "work.txt").write_text("half done\n")
    (path / ".git").write_text("gitdir: /nowhere\n")
    before = tree_of(path)

    report = env.sweeper.sweep(now=NOW)

    target = env.lost_found / f"{job_id}-{STAMP}"
    (vanished,) = report.vanished
    assert (vanished.job_id, vanished.moved_to) == (job_id, target)
    assert tree_of(target) == before
    assert env.store.job(job_id).worktree is None
    assert env.store.job(job_id).error == VANISHED
    assert env.worktrees() == []


def test_running_job_without_worktree_is_reported_not_touched(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.RUNNING, lock=True)
    shutil.rmtree(path)
    report = env.sweeper.sweep(now=NOW)
    assert report.running_without_worktree == [job_id]
    job = env.store.job(job_id)
    assert (job.state, job.worktree, job.error) == (S.RUNNING, str(path), None)


# ---------------------------------------------------------------- live jobs


def test_locked_worktree_of_a_running_job_is_never_touched(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.RUNNING, lock=True)
    (path / "in-progress.txt").write_text("agent output\n")
    before = tree_of(path)

    for days in (0, 30, 3650):
        report = env.sweeper.sweep(now=NOW + timedelta(days=days))
        assert not acted(report)
        assert not report.errors

    assert tree_of(path) == before
    (entry,) = worktrees.entries(env.repo)[1:]
    assert entry.locked
    assert env.store.job(job_id).worktree == str(path)
    assert env.refs() == {}


def test_unlocked_worktree_of_a_running_job_gets_locked(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.RUNNING)
    report = env.sweeper.sweep(now=NOW)
    assert report.locked == [job_id]
    (entry,) = worktrees.entries(env.repo)[1:]
    assert entry.locked
    assert env.sweeper.sweep(now=NOW).locked == []
    assert path.is_dir()


# ---------------------------------------------------------------- retention


def test_retention_removes_old_finished_worktrees_only(env: Env) -> None:
    old_clean, old_clean_path = env.job_with_worktree(
        S.SUCCEEDED, finished=timedelta(hours=73), lock=True
    )
    old_dirty, old_dirty_path = env.job_with_worktree(S.TIMED_OUT, finished=timedelta(hours=72))
    (old_dirty_path / "README.md").write_text("edited after the job\n")
    (old_dirty_path / "left.txt").write_text("leftover\n")
    young, young_path = env.job_with_worktree(S.SUCCEEDED, finished=timedelta(hours=71))
    running, running_path = env.job_with_worktree(S.RUNNING, lock=True)
    branches = {j: env.store.job(j).branch for j in (old_clean, old_dirty)}
    heads = {j: refs.branch_head(env.repo, b) for j, b in branches.items()}

    report = env.sweeper.sweep(now=NOW)

    assert not report.errors
    assert sorted(r.job_id for r in report.retained) == sorted([old_clean, old_dirty])
    assert {r.job_id: r.ref for r in report.retained} == {
        old_clean: None,
        old_dirty: f"refs/dispatcher/retained/{old_dirty}",
    }
    for job_id, path in ((old_clean, old_clean_path), (old_dirty, old_dirty_path)):
        assert not path.exists()
        assert env.store.job(job_id).worktree is None
        assert refs.branch_head(env.repo, branches[job_id]) == heads[job_id]
    ref = f"refs/dispatcher/retained/{old_dirty}"
    assert g(env.repo, "show", f"{ref}:left.txt") == "leftover"
    assert g(env.repo, "show", f"{ref}:README.md") == "edited after the job"
    assert g(env.repo, "rev-parse", f"{ref}^") == heads[old_dirty]
    assert env.refs() == {ref: g(env.repo, "rev-parse", ref)}
    assert young_path.is_dir() and env.store.job(young).worktree == str(young_path)
    assert running_path.is_dir() and env.store.job(running).worktree == str(running_path)
    assert env.store.job(old_clean).error is None
    log = (env.settings.jobs_dir / str(old_dirty) / "agent.log").read_text()
    assert f"uncommitted changes saved at {ref}" in log
    assert sorted(env.worktrees()) == sorted([young_path.resolve(), running_path.resolve()])


def test_retention_zero_keeps_every_worktree(env: Env) -> None:
    env.settings.worktree_retention_hours = 0
    _, path = env.job_with_worktree(S.SUCCEEDED, finished=timedelta(days=365))
    report = env.sweeper.sweep(now=NOW)
    assert report.retained == []
    assert path.is_dir()


def test_retention_skips_closed_jobs(env: Env) -> None:
    job_id, path = env.job_with_worktree(S.MERGED, finished=timedelta(days=30))
    report = env.sweeper.sweep(now=NOW)
    assert report.retained == [] and report.orphans == []
    assert path.is_dir()
    assert env.store.job(job_id).worktree == str(path)


def test_a_second_sweep_finds_nothing_to_do(env: Env) -> None:
    env.orphan("stray")
    _, gone = env.job_with_worktree(S.FAILED, finished=timedelta(hours=1))
    shutil.rmtree(gone)
    env.job_with_worktree(S.SUCCEEDED, finished=timedelta(days=4))
    assert acted(env.sweeper.sweep(now=NOW))
    again = env.sweeper.sweep(now=NOW)
    assert not acted(again)
    assert not again.errors


def test_loop_sweeps_until_stopped(env: Env) -> None:
    path = env.orphan("stray")
    stop = threading.Event()

    def clock() -> datetime:
        stop.set()  # one sweep, then the loop ends
        return NOW

    env.sweeper.loop(stop, 3600, clock)
    assert not path.exists()


# ---------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("finished", "hours", "due"),
    [
        (timedelta(hours=72), 72, True),
        (timedelta(hours=72) - timedelta(seconds=1), 72, False),
        (timedelta(days=400), 72, True),
        (timedelta(minutes=30), 0.5, True),
        (timedelta(days=400), 0, False),  # 0 disables retention
        (None, 72, False),  # never finished
        (-timedelta(hours=1), 72, False),  # clock skew: finished "in the future"
    ],
)
def test_retention_due(finished: timedelta | None, hours: float, due: bool) -> None:
    finished_at = NOW - finished if finished is not None else None
    assert retention_due(finished_at, NOW, hours) is due


def test_retention_due_accepts_naive_utc() -> None:
    naive = datetime(2024, 4, 1, 12)
    assert retention_due(naive, NOW, 72)
    assert retention_due(NOW - timedelta(days=5), NOW.replace(tzinfo=None), 72)


def test_unclaimed(tmp_path: Path) -> None:
    dirs = [tmp_path / n for n in ("1", "2", "3", "x")]
    claimed = {os.path.realpath(tmp_path / "1")}
    assert unclaimed(dirs, claimed, active_ids={2}) == [tmp_path / "3", tmp_path / "x"]


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("12", "12"),
        ("a b", "a_b"),
        ("..", "worktree"),
        ("x.lock", "x_lock"),
        ("-opt", "-opt"),
        ("näme:@{1}", "n_me_1"),
        ("", "worktree"),
    ],
)
def test_ref_component(name: str, component: str) -> None:
    assert ref_component(name) == component
    names.validate_branch_name(f"x/{component}-{STAMP}")  # always a valid ref tail


def test_stamp_is_utc() -> None:
    assert stamp(NOW) == STAMP
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert stamp(plus_two) == STAMP
