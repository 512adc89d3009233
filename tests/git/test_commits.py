"""dispatcher.git.commits: status, the leftover commit and snapshots, against real git."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dispatcher.errors import (
    InvalidInput,
)
from dispatcher.git import commits, refs, worktrees
from tests.git.helpers import AGENT, head
from tests.gitutil import commit_file
from tests.gitutil import git as g


def test_status_porcelain(repo: Path) -> None:
    assert commits.status_porcelain(repo) == []
    (repo / ".gitignore").write_text("*.o\n")
    g(repo, "add", ".gitignore")
    g(repo, "commit", "-q", "-m", "ignore")
    (repo / "x.o").write_text("ignored")
    assert commits.status_porcelain(repo) == []

    (repo / "dir").mkdir()
    (repo / "dir" / "new file.txt").write_text("new\n")
    assert commits.status_porcelain(repo) != []
    assert commits.status_porcelain(repo) == ["dir/new file.txt"]
    assert commits.status_porcelain(repo, untracked=False) == []

    g(repo, "mv", "a.txt", "renamed.txt")
    (repo / "README.md").write_text("changed\n")
    changed = commits.status_porcelain(repo, untracked=False)
    assert sorted(changed) == ["README.md", "a.txt", "renamed.txt"]


def test_commit_leftovers_commits_everything(repo: Path) -> None:
    (repo / "README.md").write_text("modified\n")
    (repo / "a.txt").unlink()
    (repo / "sub").mkdir()
    (repo / "sub" / "new.txt").write_text("new\n")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "debug.log").write_text("ignored\n")
    before = head(repo)

    sha = commits.commit_leftovers(repo, "agent work\n\n# not a comment\n", **AGENT).sha

    assert sha == head(repo)
    assert head(repo, "HEAD~1") == before
    assert g(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == [
        ".gitignore",
        "README.md",
        "sub/new.txt",
    ]
    assert g(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "Dispatcher Bot <bot@dispatcher.invalid>|Dispatcher Bot <bot@dispatcher.invalid>"
    )
    assert g(repo, "log", "-1", "--format=%B") == "agent work\n\n# not a comment"
    assert commits.status_porcelain(repo) == []
    assert commits.commit_leftovers(repo, "nothing", **AGENT).sha is None
    assert head(repo) == sha


def test_commit_leftovers_without_any_configured_identity(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("EMAIL", "")
    (repo / "new.txt").write_text("x\n")
    sha = commits.commit_leftovers(repo, "work", **AGENT).sha
    assert sha is not None
    assert g(repo, "log", "-1", "--format=%ae %ce") == (
        "bot@dispatcher.invalid bot@dispatcher.invalid"
    )


def test_commit_leftovers_skips_hooks_and_refuses_empty_message(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    (repo / "new.txt").write_text("x\n")
    assert commits.commit_leftovers(repo, "work", **AGENT).sha is not None
    (repo / "more.txt").write_text("x\n")
    with pytest.raises(InvalidInput):
        commits.commit_leftovers(repo, "  \n", **AGENT)


MIB = 1024 * 1024


def sparse_file(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk (``truncate -s``): stat size is what counts."""
    with open(path, "wb") as fh:
        fh.truncate(size)


def tree_files(repo: Path, rev: str = "HEAD") -> set[str]:
    return set(g(repo, "ls-tree", "-r", "--name-only", rev).splitlines())


def test_commit_leftovers_leaves_files_over_the_limit_in_the_worktree(repo: Path) -> None:
    sparse_file(repo / "big.bin", 200 * MIB)  # untracked
    (repo / "logs").mkdir()
    sparse_file(repo / "logs" / "staged.bin", 60 * MIB)
    g(repo, "add", "logs/staged.bin")  # the agent staged it itself
    sparse_file(repo / "a.txt", 51 * MIB)  # a tracked file grown over the limit
    (repo / "small.txt").write_text("small\n")
    (repo / "README.md").write_text("changed\n")

    done = commits.commit_leftovers(repo, "leftovers", **AGENT, max_file_bytes=50 * MIB)

    assert done.sha == head(repo)
    assert done.too_big == (
        ("a.txt", 51 * MIB),
        ("big.bin", 200 * MIB),
        ("logs/staged.bin", 60 * MIB),
    )
    assert tree_files(repo) == {"README.md", "a.txt", "small.txt"}
    assert g(repo, "show", "HEAD:a.txt") == "a"  # its committed version is kept
    assert g(repo, "show", "HEAD:README.md") == "changed"
    assert (repo / "big.bin").stat().st_size == 200 * MIB  # all still in the worktree
    assert (repo / "logs" / "staged.bin").stat().st_size == 60 * MIB
    assert (repo / "a.txt").stat().st_size == 51 * MIB
    assert sorted(commits.status_porcelain(repo)) == ["a.txt", "big.bin", "logs/staged.bin"]


def test_commit_leftovers_limit_is_on_the_size_on_disk_and_only_over_it(repo: Path) -> None:
    (repo / "ten.txt").write_bytes(b"x" * 10)
    (repo / "eleven.txt").write_bytes(b"x" * 11)
    (repo / "link").symlink_to("eleven.txt" * 3)  # a symlink weighs its target's name, not it
    done = commits.commit_leftovers(repo, "leftovers", **AGENT, max_file_bytes=10)
    assert done.too_big == (("eleven.txt", 11),)
    assert {"ten.txt", "link"} <= tree_files(repo)
    assert "eleven.txt" not in tree_files(repo)
    # Only over the limit; nothing left out means nothing named.
    (repo / "eleven.txt").unlink()
    (repo / "more.txt").write_text("m")
    done = commits.commit_leftovers(repo, "more", **AGENT, max_file_bytes=10)
    assert done.too_big == () and done.sha == head(repo)
    assert commits.commit_leftovers(repo, "none", **AGENT, max_file_bytes=10) == commits.Leftovers()


def test_commit_leftovers_unstages_force_added_files_the_ignore_rules_match(repo: Path) -> None:
    commit_file(repo, ".gitignore", "secrets.env\n*.log\n")
    (repo / "kept.log").write_text("tracked though ignored\n")
    g(repo, "add", "-f", "kept.log")
    g(repo, "commit", "-q", "-m", "a tracked file the rules match")
    (repo / "secrets.env").write_text("TOKEN=hunter2\n")
    (repo / "conf").mkdir()
    (repo / "conf" / "debug.log").write_text("noise\n")
    g(repo, "add", "-f", "secrets.env", "conf/debug.log")  # the agent forced them in
    (repo / "kept.log").write_text("changed\n")
    (repo / "work.txt").write_text("work\n")

    sha = commits.commit_leftovers(repo, "leftovers", **AGENT).sha

    assert sha == head(repo)
    files = tree_files(repo)
    assert "secrets.env" not in files and "conf/debug.log" not in files
    assert {"work.txt", "kept.log"} <= files
    assert g(repo, "show", "HEAD:kept.log") == "changed"  # tracked at HEAD: still committed
    assert (repo / "secrets.env").read_text() == "TOKEN=hunter2\n"  # left in the worktree
    assert g(repo, "status", "--porcelain", "--ignored") == "!! conf/\n!! secrets.env"
    (repo / "other.txt").write_text("o\n")
    g(repo, "add", "-f", "secrets.env")
    done = commits.commit_leftovers(repo, "again", **AGENT)
    assert done.ignored == ("secrets.env",)
    assert "secrets.env" not in tree_files(repo)


def test_commit_leftovers_never_commits_excluded_paths_even_when_staged(
    repo: Path, tmp_path: Path
) -> None:
    checkout_deps = tmp_path / "deps"
    checkout_deps.mkdir()
    (repo / ".env").write_text("copied from the checkout\n")  # copy: [.env]
    (repo / "node_modules").symlink_to(checkout_deps)  # link: [node_modules]
    (repo / "cfg").mkdir()
    (repo / "cfg" / "local.ini").write_text("copied\n")  # copy: [cfg]
    g(repo, "add", "-f", ".env", "node_modules", "cfg")
    (repo / "work.txt").write_text("work\n")

    commits.commit_leftovers(repo, "leftovers", **AGENT, exclude=[".env", "node_modules", "cfg/"])

    assert tree_files(repo) == {"README.md", "a.txt", "work.txt"}
    assert (repo / ".env").is_file() and (repo / "node_modules").is_symlink()


def test_commit_leftovers_of_a_clean_tree_is_one_git_process(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which("git")
    assert real is not None
    calls = tmp_path / "calls"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    done = commits.commit_leftovers(repo, "nothing", **AGENT, max_file_bytes=1)
    assert done == commits.Leftovers()
    assert len(calls.read_text().splitlines()) == 1


def _index_bytes(wt: Path) -> bytes:
    return Path(g(wt, "rev-parse", "--path-format=absolute", "--git-path", "index")).read_bytes()


def test_snapshot_worktree_snapshots_everything_and_changes_nothing(
    repo: Path, tmp_path: Path
) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / ".gitignore").write_text("*.o\n")
    g(wt, "add", ".gitignore")  # staged
    (wt / "README.md").write_text("edited\n")  # modified, not staged
    (wt / "a.txt").unlink()  # deleted
    (wt / "dir").mkdir()
    (wt / "dir" / "new.txt").write_text("untracked\n")
    (wt / "build.o").write_text("ignored")
    before_status = g(wt, "status", "--porcelain")
    before_index = _index_bytes(wt)
    head_before = head(wt)

    sha = commits.snapshot_worktree(wt, "refs/dispatcher/orphans/wt-1", "save it", **AGENT).sha

    assert sha is not None
    assert head(repo, "refs/dispatcher/orphans/wt-1") == sha
    assert head(repo, f"{sha}^") == head_before
    assert g(repo, "show", f"{sha}:README.md") == "edited"
    assert g(repo, "show", f"{sha}:dir/new.txt") == "untracked"
    assert g(repo, "show", f"{sha}:.gitignore") == "*.o"
    files = g(repo, "ls-tree", "-r", "--name-only", sha).splitlines()
    assert "a.txt" not in files
    assert "build.o" not in files
    assert g(repo, "log", "-1", "--format=%an <%ae>|%cn|%s", sha) == (
        "Dispatcher Bot <bot@dispatcher.invalid>|Dispatcher Bot|save it"
    )
    # The worktree, its index and its branch are untouched.
    assert g(wt, "status", "--porcelain") == before_status
    assert _index_bytes(wt) == before_index
    assert head(wt) == head_before == head(repo, "job")
    assert g(wt, "symbolic-ref", "--short", "HEAD") == "job"
    assert (wt / "build.o").read_text() == "ignored"


def test_snapshot_leaves_out_big_and_force_added_ignored_files_like_commit_leftovers(
    repo: Path, tmp_path: Path
) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / ".gitignore").write_text("secrets.env\n")
    sparse_file(wt / "big.bin", 200 * MIB)  # untracked, over the limit
    sparse_file(wt / "staged.bin", 60 * MIB)
    sparse_file(wt / "a.txt", 51 * MIB)  # tracked, grown over the limit
    (wt / "secrets.env").write_text("TOKEN=hunter2\n")
    g(wt, "add", "staged.bin", ".gitignore")
    g(wt, "add", "-f", "secrets.env")  # forced in: the ignore rules match it
    (wt / "work.txt").write_text("work\n")
    before_index = _index_bytes(wt)

    done = commits.snapshot_worktree(
        wt, "refs/dispatcher/released/1", "save", **AGENT, max_file_bytes=50 * MIB
    )

    assert done.sha is not None and head(repo, "refs/dispatcher/released/1") == done.sha
    assert done.too_big == (("a.txt", 51 * MIB), ("big.bin", 200 * MIB), ("staged.bin", 60 * MIB))
    assert done.ignored == ("secrets.env",)
    assert tree_files(repo, done.sha) == {".gitignore", "README.md", "a.txt", "work.txt"}
    assert g(repo, "show", f"{done.sha}:a.txt") == "a"  # its committed version is kept
    assert _index_bytes(wt) == before_index  # the worktree's own index is untouched
    assert (wt / "big.bin").stat().st_size == 200 * MIB
    # Nothing but left-out files: no snapshot, the ref is not set, yet they are named.
    (wt / "work.txt").unlink()
    g(wt, "rm", "-q", "-f", ".gitignore", "secrets.env")
    g(wt, "checkout", "--", "a.txt")
    only = commits.snapshot_worktree(wt, "refs/dispatcher/x", "m", **AGENT, max_file_bytes=50 * MIB)
    assert only.sha is None and "refs/dispatcher/x" not in refs.for_each_ref(repo, "refs/")
    assert only.too_big == (("big.bin", 200 * MIB), ("staged.bin", 60 * MIB))


def test_snapshot_worktree_clean_returns_none_and_sets_no_ref(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("*.o\n")
    (wt / "x.o").write_text("ignored only")
    assert commits.snapshot_worktree(wt, "refs/dispatcher/x", "nothing", **AGENT).sha is None
    assert refs.for_each_ref(repo, "refs/dispatcher/") == {}
    with pytest.raises(InvalidInput):
        commits.snapshot_worktree(wt, "refs/dispatcher/x", "  ", **AGENT)


def test_snapshot_worktree_on_a_detached_head(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    sha = worktrees.add_detached(repo, wt, "HEAD")
    commit_file(wt, "c.txt", "committed on a detached HEAD\n")
    detached = head(wt)
    (wt / "u.txt").write_text("uncommitted\n")

    saved = commits.snapshot_worktree(wt, "refs/dispatcher/d", "save", **AGENT).sha

    assert saved is not None
    assert head(repo, f"{saved}^") == detached != sha
    assert g(repo, "show", f"{saved}:u.txt") == "uncommitted"
    assert g(repo, "show", f"{saved}:c.txt") == "committed on a detached HEAD"
    assert g(wt, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # still detached
    assert head(wt) == detached


def test_snapshot_worktree_overwrites_keeping_a_reflog(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / "u.txt").write_text("one\n")
    first = commits.snapshot_worktree(wt, "refs/dispatcher/r", "first", **AGENT).sha
    (wt / "u.txt").write_text("two\n")
    second = commits.snapshot_worktree(wt, "refs/dispatcher/r", "second", **AGENT).sha
    assert first is not None and second is not None and first != second
    assert head(repo, "refs/dispatcher/r") == second
    assert g(repo, "rev-parse", "refs/dispatcher/r@{1}") == first


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/dispatcher/",
        "refs/dispatcher/../heads/x",
        "refs/dispatcher/a b",
        "refs/dispatcher/a\nb",
        "refs/dispatcher/x.lock",
        "refs/dispatcher/a..b",
        "-refs/dispatcher/x",
        "dispatcher/x",
    ],
)
def test_snapshot_worktree_refuses_bad_refs(repo: Path, tmp_path: Path, ref: str) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / "u.txt").write_text("u\n")
    with pytest.raises(InvalidInput):
        commits.snapshot_worktree(wt, ref, "m", **AGENT)
    with pytest.raises(InvalidInput):
        commits.update_ref(repo, ref, "HEAD")
    assert g(repo, "for-each-ref") == g(repo, "for-each-ref", "refs/heads/")


def test_snapshot_worktree_keeps_tracked_files_that_match_an_ignore_rule(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "vendor.o").write_text("tracked although ignored\n")
    g(repo, "add", "-f", "vendor.o")
    g(repo, "commit", "-q", "-m", "vendor")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("*.o\n")
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / "vendor.o").write_text("changed\n")
    (wt / "fresh.o").write_text("ignored, not saved\n")
    sha = commits.snapshot_worktree(wt, "refs/dispatcher/t", "m", **AGENT).sha
    assert sha is not None
    assert g(repo, "show", f"{sha}:vendor.o") == "changed"
    assert "fresh.o" not in g(repo, "ls-tree", "--name-only", sha).splitlines()
