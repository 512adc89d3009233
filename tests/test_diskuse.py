"""dispatcher.jobs.diskuse: the repos' worktree bytes, measured in the background.

Real directories and real linked worktrees under a state dir; a clock the test
moves, so that each figure's time says which measurement it comes from.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.git import worktrees
from dispatcher.jobs.diskuse import DiskUse, Figure, dir_size
from tests.gitutil import init_repo
from tests.waiting import wait_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(state_dir=tmp_path / "state")
    s.ensure_dirs()
    return s


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", files={"README.md": "hello\n", "a.txt": "a\n"})


def tree(settings: Settings, repo: Path, job_id: int, name: str = "proj") -> Path:
    """Job ``job_id``'s worktree, where the runner puts it."""
    path = settings.worktrees_dir / name / str(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    worktrees.add(repo, path, f"dispatcher/{job_id}-x", "HEAD")
    return path


def test_the_figure_counts_each_trees_bytes(settings: Settings, repo: Path, tmp_path: Path) -> None:
    disk = DiskUse(settings, Clock())
    assert disk.figure("proj") is None  # not measured yet: "measuring"
    disk.full_pass()
    assert disk.figure("proj") == Figure(0, T0)  # no directory: no trees
    path = tree(settings, repo, 1)
    disk.full_pass()
    base = disk.figure("proj")
    assert base is not None and base.bytes == dir_size(path) >= len("hello\n") + len("a\n")
    (path / "big.bin").write_bytes(b"x" * 100_000)
    (path / "sub").mkdir()
    (path / "sub" / "small.txt").write_bytes(b"y" * 10)
    os.link(path / "big.bin", path / "sub" / "hardlink.bin")  # counted once
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge.bin").write_bytes(b"z" * 1_000_000)
    (path / "link").symlink_to(outside)  # not followed
    link_size = os.lstat(path / "link").st_size
    (settings.worktrees_dir / "proj" / "stray.txt").write_bytes(b"s" * 7)  # counted too
    disk.full_pass()
    assert disk.figure("proj") == Figure(base.bytes + 100_000 + 10 + link_size + 7, T0)


def test_a_job_that_ends_has_its_own_tree_measured_again(settings: Settings, repo: Path) -> None:
    clock = Clock()
    disk = DiskUse(settings, clock)
    one, two = tree(settings, repo, 1), tree(settings, repo, 2)
    disk.full_pass()
    before = disk.figure("proj")
    assert before is not None and before.measured_at == T0
    (one / "out.bin").write_bytes(b"1" * 5_000)
    (two / "out.bin").write_bytes(b"2" * 3_000)  # changed by hand: left for the next pass
    clock.tick()
    disk.job_ended(1)
    disk.measure_changes()
    assert disk.figure("proj") == Figure(before.bytes + 5_000, T0)  # tree 2's part: from T0
    later = clock.tick()
    disk.full_pass()
    assert disk.figure("proj") == Figure(before.bytes + 8_000, later)


def test_trees_that_come_and_go_are_listed_again(settings: Settings, repo: Path) -> None:
    clock = Clock()
    disk = DiskUse(settings, clock)
    one = tree(settings, repo, 1)
    disk.full_pass()
    single = disk.figure("proj")
    assert single is not None
    tree(settings, repo, 2)  # same files: the same size
    clock.tick()
    disk.touch("proj")
    disk.measure_changes()
    assert disk.figure("proj") == Figure(2 * single.bytes, T0)  # tree 1 kept from the pass
    worktrees.remove(repo, one)
    moved = clock.tick()
    disk.touch("proj")
    disk.measure_changes()
    assert disk.figure("proj") == Figure(single.bytes, moved - timedelta(minutes=1))
    disk.job_ended(99)  # a job with no tree (it failed before it had one): nothing to do
    disk.measure_changes()
    assert disk.figure("proj") == Figure(single.bytes, moved - timedelta(minutes=1))


def test_a_job_tree_is_found_in_its_own_repo(settings: Settings, repo: Path) -> None:
    disk = DiskUse(settings, Clock())
    tree(settings, repo, 1, name="a")
    disk.full_pass()
    other = tree(settings, repo, 2, name="b")  # a repo the last pass did not see
    (other / "out.bin").write_bytes(b"b" * 1_000)
    disk.job_ended(2)
    disk.measure_changes()
    b = disk.figure("b")
    assert b is not None and b.bytes == dir_size(other)
    a = disk.figure("a")
    assert a is not None and a.bytes == dir_size(settings.worktrees_dir / "a" / "1")


def test_the_thread_measures_on_its_own_and_stops(settings: Settings, repo: Path) -> None:
    disk = DiskUse(settings)
    path = tree(settings, repo, 1)
    disk.start()
    try:
        first = wait_until(lambda: disk.figure("proj"), "the first pass")
        assert first.bytes == dir_size(path)
        (path / "out.bin").write_bytes(b"x" * 10_000)
        disk.job_ended(1)
        wait_until(
            lambda: (f := disk.figure("proj")) and f.bytes == first.bytes + 10_000,
            "the ended job's tree measured again",
        )
    finally:
        disk.stop()
    assert disk._thread is not None and not disk._thread.is_alive()


def test_dir_size_tolerates_unreadable_and_missing(tmp_path: Path) -> None:
    assert dir_size(tmp_path / "missing") == 0
    (tmp_path / "f").write_bytes(b"1234")
    assert dir_size(tmp_path / "f") == 0  # not a directory
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "hidden").write_bytes(b"123456")
    locked.chmod(0)
    try:
        assert dir_size(tmp_path) in (4, 10)  # 10 when running as root
    finally:
        locked.chmod(0o755)
