"""dispatcher.git.dotgit reads refs from files; every answer it gives must be git's.

Each test builds a real repository state and compares the file reader with
git's own answer; where the reader is not sure it must say so (known=False),
never guess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.git import dotgit, names, refs, worktrees
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", files={"a.txt": "a\n"})


def git_ref(repo: Path, ref: str) -> str | None:
    out = g(repo, "for-each-ref", "--format=%(objectname)", ref)
    return out or None


def assert_same_as_git(path: Path, ref: str) -> None:
    known, sha = dotgit.read_ref(path, ref)
    assert known, f"{ref} should be readable from files"
    assert sha == git_ref(path, ref)


def test_loose_packed_and_missing_refs_agree_with_git(repo: Path) -> None:
    first = g(repo, "rev-parse", "HEAD")
    g(repo, "branch", "feature/x")
    assert_same_as_git(repo, "refs/heads/main")
    assert_same_as_git(repo, "refs/heads/feature/x")
    g(repo, "pack-refs", "--all")  # now only in packed-refs
    assert not (repo / ".git/refs/heads/main").exists()
    assert_same_as_git(repo, "refs/heads/main")
    second = commit_file(repo, "b.txt", "b\n")  # loose again, newer than the packed line
    assert dotgit.read_ref(repo, "refs/heads/main") == (True, second)
    assert dotgit.read_ref(repo, "refs/heads/feature/x") == (True, first)
    assert dotgit.read_ref(repo, "refs/heads/missing") == (True, None)
    g(repo, "branch", "-D", "feature/x")  # deleted from packed-refs too
    assert dotgit.read_ref(repo, "refs/heads/feature/x") == (True, None)


def test_linked_worktree_reads_the_shared_refs_and_its_own_head(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    g(repo, "worktree", "add", "-q", "-b", "job", str(tree))
    assert dotgit.head_branch(tree) == (True, "job")
    assert dotgit.head_branch(repo) == (True, "main")
    sha = commit_file(tree, "c.txt", "c\n")
    assert dotgit.read_ref(repo, "refs/heads/job") == (True, sha)
    assert dotgit.read_ref(tree, "refs/heads/job") == (True, sha)
    g(tree, "checkout", "-q", "--detach")
    assert dotgit.head_branch(tree) == (True, None)
    assert worktrees.current_branch(tree) is None


def test_plain_names_resolve_like_git_or_defer(repo: Path) -> None:
    main = g(repo, "rev-parse", "main")
    assert dotgit.resolve_branch_name(repo, "main") == (True, main)
    # A tag of the same name wins in git's lookup order: the reader must defer.
    second = commit_file(repo, "b.txt", "b\n")
    g(repo, "tag", "main", main)
    assert dotgit.resolve_branch_name(repo, "main") == (False, None)
    assert refs.rev_parse(repo, "main") == g(repo, "rev-parse", "main^{commit}")
    # So does refs/<name> and a file in the git dir of that name.
    g(repo, "update-ref", "refs/side", main)
    g(repo, "branch", "side", main)
    assert dotgit.resolve_branch_name(repo, "side") == (False, None)
    g(repo, "branch", "ORIG", second)  # the file in the git dir wins over the branch
    (repo / ".git" / "ORIG").write_text(main + "\n")
    assert dotgit.resolve_branch_name(repo, "ORIG") == (False, None)
    assert refs.rev_parse(repo, "ORIG") == main
    # Unknown names and paths are never answered from files.
    assert dotgit.resolve_branch_name(repo, "nope") == (False, None)
    assert dotgit.resolve_branch_name(repo, "refs/heads/main")[0] is False
    assert dotgit.resolve_branch_name(repo, "../main")[0] is False


@pytest.mark.parametrize(
    "setup",
    ["reftable", "symref", "per-worktree", "garbage-packed", "no-git"],
)
def test_reader_defers_to_git_when_files_are_not_plain(repo: Path, setup: str) -> None:
    ref = "refs/heads/main"
    if setup == "reftable":
        (repo / ".git" / "reftable").mkdir()
    elif setup == "symref":
        g(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
        ref = "refs/heads/alias"
    elif setup == "per-worktree":
        g(repo, "update-ref", "refs/worktree/mine", "HEAD")
        ref = "refs/worktree/mine"
    elif setup == "garbage-packed":
        (repo / ".git" / "packed-refs").write_text("not a packed refs file\n")
        ref = "refs/heads/only-packed"
    elif setup == "no-git":
        (repo / ".git").rename(repo / "moved.git")
    assert dotgit.read_ref(repo, ref) == (False, None)


def test_git_module_answers_match_git_with_and_without_the_reader(repo: Path) -> None:
    g(repo, "branch", "other")
    g(repo, "pack-refs", "--all")
    g(repo, "tag", "v1")
    for name in ("main", "other", "v1", "HEAD"):
        assert refs.rev_parse(repo, name) == g(repo, "rev-parse", f"{name}^{{commit}}")
    assert refs.branch_head(repo, "other") == g(repo, "rev-parse", "other")
    assert refs.branch_head(repo, "gone") is None


@pytest.mark.parametrize(
    "name",
    ["dispatcher/12-fix-the-bug", "a", "x_y/z-", "A/B/C", "job-", "9/8"],
)
def test_plain_branch_names_skip_git_and_git_agrees(name: str, repo: Path) -> None:
    names._git_accepts_branch.cache_clear()
    assert names._PLAIN_BRANCH.fullmatch(name)
    assert names.validate_branch_name(name) == name
    g(repo, "check-ref-format", "--branch", name)  # git accepts it too
