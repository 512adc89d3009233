"""An idle tree reset when it entered the pool is taken without a checkout or a clean,
unless something touched it while it was idle (then it is recycled as before).

Real git repos, the real pool and its threads, real inotify; git processes are counted
through a logging ``git`` first on the PATH (:func:`tests.gitutil.git_counter`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.git import dotgit
from dispatcher.git.untouched import Untouched
from tests.gitutil import commit_file, git_counter
from tests.gitutil import git as g
from tests.test_pool_demand import Env, make_env
from tests.waiting import wait_until

FILES = {"README.md": "hello\n", "a.txt": "a\n", "src/deep/app.py": "print('hi')\n"}


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every git process of the test (and of the pool it starts) logged to git.log."""
    bin_dir, _ = git_counter(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def env(tmp_path: Path, counted: None) -> Iterator[Env]:
    yield from make_env(tmp_path, files=FILES)


def _take_counted(env: Env, tmp_path: Path, n: int, base: str | None = None) -> list[str]:
    """Take a tree for job ``n`` at ``base`` (the default tip); the git calls it made."""
    log = tmp_path / "git.log"
    name = env.repo.name
    pool = env.pool
    wait_until(
        lambda: pool._work.empty() and not pool._making.get(name) and not pool._busy.get(name),
        "the pool at rest",
    )
    base = base or g(env.path, "rev-parse", "main")
    dest = env.settings.worktrees_dir / env.repo.name / str(n)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    assert env.pool.take(env.repo, dest, f"job/{n}", base)
    return log.read_text().splitlines()


def _assert_fresh(tree: Path, branch: str, base: str) -> None:
    """``tree`` is a clean checkout of ``base`` on ``branch``, nothing else in it."""
    assert g(tree, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert g(tree, "symbolic-ref", "--short", "HEAD") == branch
    assert g(tree, "rev-parse", "HEAD") == base
    assert g(tree, "rev-parse", f"refs/heads/{branch}") == base
    assert g(tree, "ls-files", "--others", "--ignored", "--exclude-standard") == ""
    for rel in FILES:
        assert (tree / rel).exists()


def test_an_untouched_tree_at_the_base_is_taken_with_one_update_ref(
    env: Env, tmp_path: Path
) -> None:
    base = g(env.path, "rev-parse", "main")
    calls = _take_counted(env, tmp_path, 1)
    assert len(calls) == 1 and calls[0].startswith("update-ref "), calls
    tree = env.settings.worktrees_dir / env.repo.name / "1"
    _assert_fresh(tree, "job/1", base)
    assert (tree / "README.md").read_text() == "hello\n"
    # The branch has its reflog, as `checkout -b` would have written it.
    assert f"branch: Created from {base}" in g(tree, "reflog", "show", "job/1")
    # A released tree is reset on its way back, so its next take is one update-ref too.
    (tree / "junk.txt").write_text("left by the job\n")
    (tree / "README.md").write_text("edited\n")
    inode = tree.stat().st_ino
    env.pool.give_back(env.repo, tree)
    wait_until(lambda: inode in env.inodes(), "the released tree back in the pool")
    g(env.path, "branch", "-D", "job/1")
    calls = _take_counted(env, tmp_path, 2)  # last in, first out: the released tree
    again = env.settings.worktrees_dir / env.repo.name / "2"
    assert again.stat().st_ino == inode
    assert len(calls) == 1 and calls[0].startswith("update-ref "), calls
    _assert_fresh(again, "job/2", base)
    assert (again / "README.md").read_text() == "hello\n"


def _add_file(tree: Path) -> None:
    (tree / "src" / "deep" / "new.py").write_text("new\n")


def _change_file(tree: Path) -> None:
    (tree / "src" / "deep" / "app.py").write_text("print('HI')\n")  # the same size


def _new_dirs(tree: Path) -> None:
    (tree / "build" / "out").mkdir(parents=True)
    (tree / "build" / "out" / "x.o").write_text("obj\n")


def _remove_file(tree: Path) -> None:
    (tree / "a.txt").unlink()


def _chmod(tree: Path) -> None:
    (tree / "a.txt").chmod(0o755)


def _index(tree: Path) -> None:
    g(tree, "rm", "-q", "--cached", "a.txt")  # the index alone: the file stays


def _merge_state(tree: Path) -> None:
    dirs = dotgit.git_dirs(tree)
    assert dirs is not None
    (dirs.gitdir / "MERGE_HEAD").write_text(g(tree, "rev-parse", "HEAD") + "\n")


@pytest.mark.parametrize(
    "touch", [_add_file, _change_file, _new_dirs, _remove_file, _chmod, _index, _merge_state]
)
def test_a_tree_touched_while_idle_is_recycled_and_given_clean(
    env: Env, tmp_path: Path, touch: Callable[[Path], None]
) -> None:
    base = g(env.path, "rev-parse", "main")
    for tree in env.idle():
        touch(tree)
    calls = _take_counted(env, tmp_path, 1)
    assert any(c.startswith("checkout ") for c in calls), calls
    assert any(c.startswith("clean ") for c in calls), calls
    tree = env.settings.worktrees_dir / env.repo.name / "1"
    _assert_fresh(tree, "job/1", base)
    dirs = dotgit.git_dirs(tree)
    assert dirs is not None and not (dirs.gitdir / "MERGE_HEAD").exists()
    assert (tree / "src" / "deep" / "app.py").read_text() == "print('hi')\n"
    assert not (tree / "build").exists()


def test_an_untouched_tree_behind_a_moved_base_is_checked_out_without_a_clean(
    env: Env, tmp_path: Path
) -> None:
    old = g(env.path, "rev-parse", "main")
    commit_file(env.path, "src/deep/app.py", "print('moved')\n")
    g(env.path, "rm", "-q", "a.txt")
    g(env.path, "commit", "-qm", "drop a.txt")
    new = g(env.path, "rev-parse", "main")
    assert all(g(t, "rev-parse", "HEAD") == old for t in env.idle())  # not refreshed
    calls = _take_counted(env, tmp_path, 1, base=new)
    assert [c.split()[0] for c in calls] == ["checkout"], calls
    tree = env.settings.worktrees_dir / env.repo.name / "1"
    assert g(tree, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert g(tree, "symbolic-ref", "--short", "HEAD") == "job/1"
    assert g(tree, "rev-parse", "HEAD") == new
    assert (tree / "src" / "deep" / "app.py").read_text() == "print('moved')\n"
    assert not (tree / "a.txt").exists()


def test_a_change_inside_a_kept_directory_is_no_touch(tmp_path: Path, counted: None) -> None:
    for env in make_env(tmp_path, files=FILES, keep=["node_modules"]):
        idle = env.idle()
        for tree in idle:  # a dependency install: kept across jobs on purpose
            (tree / "node_modules" / "pkg").mkdir(parents=True)
            (tree / "node_modules" / "pkg" / "index.js").write_text("dep\n")
        first = _take_counted(env, tmp_path, 1)
        assert len(first) == 1 and first[0].startswith("update-ref "), first
        tree = env.settings.worktrees_dir / env.repo.name / "1"
        assert (tree / "node_modules" / "pkg" / "index.js").read_text() == "dep\n"
        (env.idle()[0] / "stray.txt").write_text("outside the kept directory\n")
        second = _take_counted(env, tmp_path, 2)
        assert any(c.startswith("clean ") for c in second), second
        other = env.settings.worktrees_dir / env.repo.name / "2"
        assert not (other / "stray.txt").exists()
        assert (other / "node_modules" / "pkg" / "index.js").read_text() == "dep\n"


def test_trees_a_previous_pool_left_are_recycled_when_taken(env: Env, tmp_path: Path) -> None:
    env.pool.stop()  # as if the daemon died: its trees stay on disk, unwatched
    for tree in env.on_disk():
        (tree / "left.txt").write_text("made while no daemon watched\n")
    env.pool = type(env.pool)(env.settings, env.store.repos, clock=lambda: env.now[0])
    env.pool.start()
    calls = _take_counted(env, tmp_path, 1)
    assert any(c.startswith("clean ") for c in calls), calls
    tree = env.settings.worktrees_dir / env.repo.name / "1"
    _assert_fresh(tree, "job/1", g(env.path, "rev-parse", "main"))


def test_the_watch_proves_nothing_it_cannot_watch(tmp_path: Path) -> None:
    watch = Untouched()
    try:
        plain = tmp_path / "plain"
        plain.mkdir()
        assert not watch.start(plain, "0" * 40)  # no linked worktree's .git file
        assert watch.end(plain) is None
        assert watch.end(tmp_path / "never-watched") is None
    finally:
        watch.close()
