"""dispatcher.git.refs: queries of refs, commits and their differences."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import (
    InvalidInput,
    NotFound,
)
from dispatcher.git import commits, dotgit, refs, worktrees
from tests.git.helpers import AGENT, head
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g


def test_toplevel_of_repo_subdir_and_file(repo: Path) -> None:
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert refs.toplevel(repo) == repo.resolve()
    assert refs.toplevel(repo / "sub" / "deeper") == repo.resolve()
    assert refs.toplevel(repo / "README.md") == repo.resolve()


@pytest.mark.parametrize("kind", ["plain dir", "missing", "bare", "git dir"])
def test_toplevel_refuses_what_is_not_a_work_tree(tmp_path: Path, repo: Path, kind: str) -> None:
    paths = {
        "plain dir": tmp_path / "home",
        "missing": tmp_path / "nope" / "deeper",
        "bare": tmp_path / "bare.git",
        "git dir": repo / ".git",
    }
    if kind == "bare":
        g(tmp_path, "clone", "-q", "--bare", str(repo), str(paths["bare"]))
    with pytest.raises(InvalidInput, match="not a git repository"):
        refs.toplevel(paths[kind])


def test_common_dir_is_shared_by_linked_worktrees(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    assert refs.common_dir(repo) == (repo / ".git").resolve()
    assert refs.common_dir(wt) == (repo / ".git").resolve()


def test_default_branch(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", branch="trunk")
    assert refs.default_branch(repo) == "trunk"
    unborn = tmp_path / "unborn"
    unborn.mkdir()
    g(unborn, "init", "-q", "-b", "develop")
    assert refs.default_branch(unborn) == "develop"


def test_default_branch_when_detached(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", branch="master")
    g(repo, "checkout", "-q", "--detach")
    assert refs.default_branch(repo) == "master"
    g(repo, "branch", "main")
    assert refs.default_branch(repo) == "main"
    g(repo, "branch", "-q", "-D", "main")
    g(repo, "branch", "-q", "-D", "master")
    with pytest.raises(InvalidInput, match="detached"):
        refs.default_branch(repo)


def test_rev_parse(repo: Path) -> None:
    sha = head(repo)
    assert refs.rev_parse(repo, "HEAD") == sha
    assert refs.rev_parse(repo, "main") == sha
    assert refs.rev_parse(repo, sha[:10]) == sha
    with pytest.raises(InvalidInput):
        refs.rev_parse(repo, "-x")
    with pytest.raises(InvalidInput):
        refs.rev_parse(repo, "--output=/tmp/x")
    with pytest.raises(NotFound, match="no such commit or ref: 'nope'"):
        refs.rev_parse(repo, "nope")
    with pytest.raises(NotFound):  # a tree is not a commit
        refs.rev_parse(repo, "HEAD^{tree}")


def test_branch_head_and_is_ancestor(repo: Path) -> None:
    first = head(repo)
    second = commit_file(repo, "b.txt", "b\n")
    assert refs.branch_head(repo, "main") == second
    assert refs.branch_head(repo, "missing") is None
    with pytest.raises(InvalidInput):
        refs.branch_head(repo, "-x")
    assert refs.is_ancestor(repo, first, second)
    assert refs.is_ancestor(repo, second, second)
    assert not refs.is_ancestor(repo, second, first)


def test_diffstat_branch_stats_and_diff(repo: Path) -> None:
    base = head(repo)
    commit_file(repo, "a.txt", "a\nb\nc\n")
    (repo / "README.md").unlink()
    (repo / "img.bin").write_bytes(b"\x00\x01\x02")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "more")
    tip = head(repo)

    stat = refs.diffstat(repo, base, tip)
    assert stat == refs.DiffStat(
        files=3, insertions=2, deletions=1, paths=["README.md", "a.txt", "img.bin"]
    )
    assert refs.branch_stats(repo, base, tip) == refs.BranchStats(2, True, stat)
    backwards = refs.branch_stats(repo, tip, base)
    assert (backwards.ahead, backwards.contains_base) == (0, False)
    assert refs.branch_stats(repo, tip, tip) == refs.BranchStats(
        0, True, refs.diffstat(repo, tip, tip)
    )
    patch = refs.diff(repo, base, tip)
    assert "+b\n+c\n" in patch
    assert "deleted file mode" in patch
    summary = refs.diff(repo, base, tip, stat=True)
    assert "3 files changed" in summary
    with pytest.raises(InvalidInput):
        refs.diffstat(repo, "--output=/tmp/x", tip)
    with pytest.raises(InvalidInput):
        refs.branch_stats(repo, base, "-x")


def test_diffstat_counts_a_rename_once(repo: Path) -> None:
    base = head(repo)
    g(repo, "mv", "README.md", "docs.md")
    g(repo, "commit", "-q", "-m", "rename")
    stat = refs.diffstat(repo, base, "HEAD")
    assert stat.files == 1
    assert stat.paths == ["docs.md"]


def test_update_ref_and_is_referenced(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add_detached(repo, wt, "HEAD")
    loose = commit_file(wt, "c.txt", "c\n")
    assert refs.is_referenced(repo, head(repo, "main"))
    assert not refs.is_referenced(repo, loose)
    commits.update_ref(repo, "refs/dispatcher/keep/1", loose, "keep the detached commit")
    assert head(repo, "refs/dispatcher/keep/1") == loose
    assert refs.is_referenced(repo, loose)
    with pytest.raises(NotFound):
        commits.update_ref(repo, "refs/dispatcher/keep/2", "no-such-commit")


def test_changed_gitlinks_finds_nested_repositories(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    init_repo(wt / "vendor" / "lib")  # an agent cloned something in its worktree
    (wt / "plain.txt").write_text("p\n")
    sha = commits.snapshot_worktree(wt, "refs/dispatcher/n", "m", **AGENT).sha
    assert sha is not None
    assert refs.changed_gitlinks(repo, sha) == ["vendor/lib"]
    assert refs.changed_gitlinks(repo, "HEAD") == []


def test_branch_stats_of_a_commit_on_its_base_reads_its_parent_from_the_object(
    repo: Path,
) -> None:
    base = g(repo, "rev-parse", "HEAD")
    commit_file(repo, "one.txt", "1\n2\n")
    head = g(repo, "rev-parse", "HEAD")
    assert dotgit.commit_parents(repo, head) == [base]
    assert dotgit.commit_parents(repo, base) == []  # the root commit
    assert dotgit.commit_parents(repo, "0" * 40) is None  # no such object: ask git
    stats = refs.branch_stats(repo, base, head)
    assert (stats.ahead, stats.contains_base, stats.diff.insertions) == (1, True, 2)
    # An object file that does not hash to its name (damaged) is not believed.
    other = g(repo, "commit-tree", "-p", base, "-m", "x", f"{head}^{{tree}}")
    damaged = repo / ".git" / "objects" / other[:2] / other[2:]
    damaged.chmod(0o644)
    damaged.write_bytes((repo / ".git" / "objects" / head[:2] / head[2:]).read_bytes())
    assert dotgit.commit_parents(repo, other) is None
    # A replace ref changes what git sees as the parents: then git is asked.
    g(repo, "replace", "--graft", head)
    assert dotgit.commit_parents(repo, head) is None
    stats = refs.branch_stats(repo, base, head)
    assert (stats.ahead, stats.contains_base) == (1, False)


def test_head_commit_reads_a_branch_or_a_detached_head(repo: Path, tmp_path: Path) -> None:
    sha = g(repo, "rev-parse", "HEAD")
    assert refs.head_commit(repo) == sha
    wt = tmp_path / "wt"
    worktrees.add_detached(repo, wt, "main")
    assert refs.head_commit(wt) == sha
    g(repo, "pack-refs", "--all")  # packed: still read from the files
    assert refs.head_commit(repo) == sha
