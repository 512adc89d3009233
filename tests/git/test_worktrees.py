"""dispatcher.git.worktrees: the worktree lifecycle, against real git."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatcher.errors import (
    AlreadyExists,
    GitError,
    InvalidInput,
    InvalidState,
    NotFound,
    RefMoved,
)
from dispatcher.git import commits, refs, worktrees
from tests.git.helpers import AGENT, has_branch, head
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g


def test_worktree_add_creates_checkout_on_new_branch_at_base(repo: Path, tmp_path: Path) -> None:
    base = head(repo)
    commit_file(repo, "later.txt", "later\n")
    wt = tmp_path / "wts" / "1-fix"
    worktrees.add(repo, wt, "dispatcher/1-fix", base, lock_reason="dispatcher job 1")
    assert (wt / "README.md").read_text() == "hello\n"
    assert not (wt / "later.txt").exists()
    assert refs.branch_head(repo, "dispatcher/1-fix") == base
    assert g(wt, "symbolic-ref", "--short", "HEAD") == "dispatcher/1-fix"
    infos = worktrees.entries(repo)
    assert [i.branch for i in infos] == ["main", "dispatcher/1-fix"]
    assert infos[1].path == wt.resolve()
    assert infos[1].head == base
    assert infos[1].locked and not infos[0].locked
    assert "dispatcher job 1" in g(repo, "worktree", "list", "--porcelain")


def test_worktree_add_into_empty_dir(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "empty"
    wt.mkdir()
    worktrees.add(repo, wt, "job", "HEAD")
    assert (wt / "README.md").exists()


def test_worktree_add_refuses_non_empty_dir(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "full"
    wt.mkdir()
    (wt / "x").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        worktrees.add(repo, wt, "job", "HEAD")
    assert (wt / "x").read_text() == "x"
    assert not has_branch(repo, "job")


def test_worktree_add_existing_branch_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    g(repo, "branch", "job")
    before = head(repo, "job")
    commit_file(repo, "b.txt", "b\n")
    wt = tmp_path / "wt"
    with pytest.raises(AlreadyExists):
        worktrees.add(repo, wt, "job", "HEAD")
    assert not wt.exists()
    assert head(repo, "job") == before
    assert len(worktrees.entries(repo)) == 1


def test_worktree_add_bad_base_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    with pytest.raises(NotFound):
        worktrees.add(repo, wt, "job", "no-such-base")
    with pytest.raises(InvalidInput):
        worktrees.add(repo, wt, "job", "--orphan")
    with pytest.raises(InvalidInput):
        worktrees.add(repo, wt, "-job", "HEAD")
    assert not wt.exists()
    assert not has_branch(repo, "job")


def test_worktree_add_failing_midway_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    # The post-checkout hook runs after git made the branch, the entry and the files.
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    wt = tmp_path / "wt"
    with pytest.raises(GitError):
        worktrees.add(repo, wt, "job", "HEAD")
    assert not wt.exists()
    assert not has_branch(repo, "job")
    assert len(worktrees.entries(repo)) == 1
    assert not (repo / ".git" / "worktrees").exists() or not any(
        (repo / ".git" / "worktrees").iterdir()
    )


def test_worktree_remove_dirty_and_idempotent(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    (wt / "README.md").write_text("edited\n")
    (wt / "new.txt").write_text("untracked\n")
    (wt / "ignored.o").write_text("x")
    worktrees.remove(repo, wt)
    assert not wt.exists()
    assert len(worktrees.entries(repo)) == 1
    assert has_branch(repo, "job")  # the branch is the caller's business
    worktrees.remove(repo, wt)  # already gone: no error


def test_worktree_remove_with_read_only_directories(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    cache = wt / "cache" / "pkg@v1"
    cache.mkdir(parents=True)
    (cache / "mod.go").write_text("package x\n")
    cache.chmod(0o555)
    (wt / "cache").chmod(0o555)
    worktrees.remove(repo, wt)
    assert not wt.exists()
    assert len(worktrees.entries(repo)) == 1


def test_worktree_lock_unknown_path(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        worktrees.lock(repo, tmp_path / "nowhere", "x")
    worktrees.unlock(repo, tmp_path / "nowhere")


def test_worktree_remove_locked_and_half_gone(repo: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    worktrees.add(repo, locked, "a", "HEAD")
    worktrees.lock(repo, locked, "agent running")
    worktrees.remove(repo, locked)
    assert not locked.exists()

    gone = tmp_path / "gone"
    worktrees.add(repo, gone, "b", "HEAD")
    worktrees.lock(repo, gone, "agent running")
    shutil.rmtree(gone)
    worktrees.remove(repo, gone)
    assert len(worktrees.entries(repo)) == 1


def test_worktree_remove_never_deletes_an_unrelated_dir(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("keep")
    worktrees.remove(repo, plain)
    assert (plain / "keep.txt").read_text() == "keep"
    with pytest.raises(InvalidInput, match="main worktree"):
        worktrees.remove(repo, repo)
    assert (repo / "README.md").exists()


def test_worktree_remove_deletes_leftover_after_prune(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    g(repo, "worktree", "remove", "--force", str(wt))
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'wt'}\n")
    (wt / "stale.txt").write_text("x")
    worktrees.remove(repo, wt)
    assert not wt.exists()


def test_worktree_list_parses_locked_prunable_detached(repo: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    gone = tmp_path / "gone"
    detached = tmp_path / "detached"
    worktrees.add(repo, locked, "l", "HEAD")
    worktrees.add(repo, gone, "p", "HEAD")
    g(repo, "worktree", "add", "-q", "--detach", str(detached), "HEAD")
    worktrees.lock(repo, locked, "reason with spaces")
    worktrees.lock(repo, locked, "again")  # idempotent
    shutil.rmtree(gone)

    by_path = {info.path: info for info in worktrees.entries(repo)}
    main = by_path[repo.resolve()]
    assert (main.branch, main.locked, main.prunable, main.bare) == ("main", False, False, False)
    assert main.head == head(repo)
    assert by_path[locked.resolve()].locked
    assert not by_path[locked.resolve()].prunable
    assert by_path[gone.resolve()].prunable
    assert by_path[detached.resolve()].branch is None
    assert by_path[detached.resolve()].head == head(repo)
    assert worktrees.checked_out_in(repo, "p") is None  # its directory is gone

    worktrees.unlock(repo, locked)
    worktrees.unlock(repo, locked)  # idempotent
    assert not {i.path: i for i in worktrees.entries(repo)}[locked.resolve()].locked
    worktrees.prune(repo)
    assert gone.resolve() not in {i.path for i in worktrees.entries(repo)}


def test_worktree_list_of_bare_repo(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    g(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    (info,) = worktrees.entries(bare)
    assert info.bare
    assert info.branch is None


def test_checked_out_in(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    main = worktrees.checked_out_in(repo, "main")
    job = worktrees.checked_out_in(repo, "job")
    assert main is not None and main.path == repo.resolve()
    assert job is not None and job.path == wt.resolve()
    g(repo, "branch", "idle")
    assert worktrees.checked_out_in(repo, "idle") is None


def test_delete_branch(repo: Path, tmp_path: Path) -> None:
    g(repo, "branch", "job")
    sha = head(repo, "job")
    worktrees.delete_branch(repo, "job", expected=sha)
    assert not has_branch(repo, "job")
    worktrees.delete_branch(repo, "job")  # idempotent
    worktrees.delete_branch(repo, "job", expected=sha)

    g(repo, "branch", "moved")
    commit_file(repo, "b.txt", "b\n")
    g(repo, "branch", "-f", "moved", "HEAD")
    with pytest.raises(RefMoved):
        worktrees.delete_branch(repo, "moved", expected=sha)
    assert has_branch(repo, "moved")

    with pytest.raises(InvalidState, match="checked out"):
        worktrees.delete_branch(repo, "main")
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "busy", "HEAD")
    with pytest.raises(InvalidState):
        worktrees.delete_branch(repo, "busy")
    worktrees.remove(repo, wt)
    worktrees.delete_branch(repo, "busy")
    assert not has_branch(repo, "busy")


def test_worktree_is_valid(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD")
    other = init_repo(tmp_path / "other")
    other_wt = tmp_path / "other-wt"
    worktrees.add(other, other_wt, "job", "HEAD")
    plain = tmp_path / "plain"
    plain.mkdir()
    inside = repo / "sub"
    inside.mkdir()

    assert worktrees.is_valid(wt)
    assert worktrees.is_valid(wt, repo)
    assert not worktrees.is_valid(other_wt, repo)
    assert not worktrees.is_valid(repo)  # the main checkout is not a linked worktree
    assert not worktrees.is_valid(plain)
    assert not worktrees.is_valid(inside)  # git would find the enclosing repo
    assert not worktrees.is_valid(tmp_path / "missing")
    assert not worktrees.is_valid(wt, tmp_path / "missing")

    (other_wt / ".git").write_bytes(b"\x00\xffgarbage")
    assert not worktrees.is_valid(other_wt)


def test_worktree_is_valid_refuses_a_pruned_or_reused_record(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "a" / "wt"
    worktrees.add(repo, wt, "one", "HEAD")
    record = Path(g(wt, "rev-parse", "--path-format=absolute", "--git-dir"))
    shutil.rmtree(record)  # the record is gone: .git points nowhere
    assert not worktrees.is_valid(wt)

    g(repo, "worktree", "prune")
    reuse = tmp_path / "b" / "wt"  # same basename: git reuses the record's name
    worktrees.add(repo, reuse, "two", "HEAD")
    assert Path(g(reuse, "rev-parse", "--path-format=absolute", "--git-dir")) == record
    assert worktrees.is_valid(reuse)
    assert not worktrees.is_valid(wt)  # its .git now names the other worktree's record


def test_worktree_add_sparse_checks_out_only_the_cone(repo: Path, tmp_path: Path) -> None:
    commit_file(repo, "src/app.py", "app\n")
    commit_file(repo, "docs/guide.md", "guide\n")
    wt = tmp_path / "sparse"
    worktrees.add(repo, wt, "job", "HEAD", sparse=["src"])
    files = sorted(str(p.relative_to(wt)) for p in wt.rglob("*") if ".git" not in p.parts)
    assert files == ["README.md", "a.txt", "src", "src/app.py"]
    assert worktrees.is_sparse(wt) and not worktrees.is_sparse(repo)
    assert commits.status_porcelain(wt) == []  # the missing docs/ is not a deletion
    (wt / "docs").mkdir()
    (wt / "docs" / "new.md").write_text("new\n")  # outside the cone: still committed
    assert commits.commit_leftovers(wt, "work", **AGENT).sha is not None
    assert g(repo, "show", "--name-only", "--format=", "job") == "docs/new.md"
    # Hostile paths never reach git, and nothing is left behind.
    for bad in ("../x", "/etc", "\x01"):
        with pytest.raises(InvalidInput):
            worktrees.add(repo, tmp_path / "bad", "job2", "HEAD", sparse=[bad])
        assert not (tmp_path / "bad").exists()
        assert not has_branch(repo, "job2")


# ---------------------------------------------------------------- direct lookups
# Finding one worktree reads git's files (its .git file and admin dir) instead of
# listing every worktree; each answer must be the one `git worktree list` gives.


def listed(repo: Path, path: Path) -> worktrees.WorktreeInfo | None:
    """git's own answer: the `git worktree list` entry at ``path``."""
    return next((i for i in worktrees.entries(repo) if i.path == path.resolve()), None)


def holder_per_git(repo: Path, branch: str) -> Path | None:
    for info in worktrees.entries(repo):
        if info.branch == branch and not info.bare and not info.prunable:
            return info.path
    return None


def test_find_worktree_reads_the_record_directly(repo: Path, tmp_path: Path) -> None:
    plain, locked, moved = tmp_path / "plain", tmp_path / "locked", tmp_path / "moved"
    worktrees.add(repo, plain, "p", "HEAD")
    worktrees.add(repo, locked, "l", "HEAD", lock_reason="dispatcher job 1")
    worktrees.add(repo, tmp_path / "idle-1", "m", "HEAD")
    worktrees.move(repo, tmp_path / "idle-1", moved)  # its admin dir keeps the old name
    for path in (plain, locked, moved):
        found = worktrees._find_worktree(repo, path)
        info = listed(repo, path)
        assert found is not None and info is not None
        assert found.admin is not None  # from the files, not from the list
        assert found.admin.parent == (repo / ".git" / "worktrees").resolve()
        assert (found.main, found.locked) == (False, info.locked)
    assert worktrees._find_worktree(repo, moved).admin.name == "idle-1"  # type: ignore[union-attr]
    main = worktrees._find_worktree(repo, repo)
    assert main is not None and main.main and main.admin is None  # the list says which is main


def test_find_worktree_moved_by_hand_pruned_or_repointed(repo: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    worktrees.add(repo, old, "a", "HEAD", lock_reason="dispatcher job 1")
    old.rename(new)  # by hand: git's record still names the old path
    assert worktrees._find_worktree(repo, new) is None
    assert listed(repo, new) is None
    found = worktrees._find_worktree(repo, old)
    assert found is not None and found.locked and found.admin is None  # asked git
    worktrees.remove(repo, new)  # a leftover: its .git file points into the records
    worktrees.remove(repo, old)  # the record, locked, with its directory gone
    assert not new.exists() and len(worktrees.entries(repo)) == 1

    pruned = tmp_path / "pruned"
    worktrees.add(repo, pruned, "b", "HEAD")
    shutil.rmtree(repo / ".git" / "worktrees" / "pruned")  # the admin dir removed by hand
    assert worktrees._find_worktree(repo, pruned) is None
    with pytest.raises(NotFound):
        worktrees.lock(repo, pruned, "x")
    worktrees.remove(repo, pruned)
    assert not pruned.exists()

    other = init_repo(tmp_path / "other")
    foreign = tmp_path / "foreign"
    worktrees.add(other, foreign, "c", "HEAD")
    assert worktrees._find_worktree(repo, foreign) is None  # another repository's record
    worktrees.remove(repo, foreign)
    assert (foreign / "README.md").exists()  # never deleted through the wrong repo
    mine = tmp_path / "mine"
    worktrees.add(repo, mine, "d", "HEAD")
    (mine / ".git").write_text((foreign / ".git").read_text())  # repointed at other's record
    assert worktrees._find_worktree(repo, mine) == worktrees._Found(False, False, None)


def test_remove_of_a_locked_tree_that_git_refuses_to_remove(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    worktrees.add(repo, wt, "job", "HEAD", lock_reason="dispatcher job 1")
    (wt / ".git").write_text("gitdir: /nowhere\n")  # `git worktree remove` fails validation
    found = worktrees._find_worktree(repo, wt)
    assert found is not None and found.locked and found.admin is None  # from the list
    worktrees.remove(repo, wt)
    assert not wt.exists()
    assert len(worktrees.entries(repo)) == 1  # its record unlocked, then pruned


def test_checked_out_in_agrees_with_git(repo: Path, tmp_path: Path) -> None:
    names = ["main", "on", "locked-gone", "gone", "detached", "moved", "pruned", "missing"]
    worktrees.add(repo, tmp_path / "on", "on", "HEAD")
    worktrees.add(repo, tmp_path / "lg", "locked-gone", "HEAD", lock_reason="job")
    shutil.rmtree(tmp_path / "lg")
    worktrees.add(repo, tmp_path / "g", "gone", "HEAD")
    shutil.rmtree(tmp_path / "g")
    worktrees.add(repo, tmp_path / "d", "detached", "HEAD")
    g(tmp_path / "d", "checkout", "-q", "--detach")
    worktrees.add(repo, tmp_path / "m", "moved", "HEAD")
    (tmp_path / "m").rename(tmp_path / "m2")
    worktrees.add(repo, tmp_path / "p", "pruned", "HEAD")
    (repo / ".git" / "worktrees" / "p" / "gitdir").unlink()  # half pruned: git lists none
    for name in names:
        found = worktrees.checked_out_in(repo, name)
        assert (found.path if found else None) == holder_per_git(repo, name), name
    found = worktrees.checked_out_in(repo, "locked-gone")
    assert found is not None and found.locked and found.head == head(repo, "locked-gone")

    # A branch that is a symbolic ref: git follows it, so the files are not enough.
    g(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/target")
    g(repo, "branch", "target")
    g(tmp_path / "on", "symbolic-ref", "HEAD", "refs/heads/alias")
    assert worktrees.checked_out_in(repo, "target") is not None
    assert holder_per_git(repo, "target") == (tmp_path / "on").resolve()


def _counting_git(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every git command the daemon's code runs from here on."""
    calls: list[list[str]] = []
    real = worktrees.cmd.run

    def run(args: list[str], *rest: object, **kwargs: object) -> object:
        calls.append(list(args))
        return real(args, *rest, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worktrees.cmd, "run", run)
    return calls


def test_lock_and_move_by_git_files_are_what_git_reads_and_undoes(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "pool" / "idle-1", tmp_path / "wts" / "7"
    worktrees.add_detached(repo, src, "main")
    calls = _counting_git(monkeypatch)
    worktrees.move(repo, src, dst)
    worktrees.lock(repo, dst, "dispatcher job 7", new=True)
    worktrees.lock(repo, dst, "another reason")  # already locked: a no-op, as before
    assert calls == []  # no git process: git's own files were written
    listed = g(repo, "worktree", "list", "--porcelain").split("\n\n")[1]
    assert f"worktree {dst.resolve()}" in listed
    assert "locked dispatcher job 7" in listed  # the reason, as `git worktree lock` writes it
    assert g(dst, "status", "--porcelain") == ""  # git works in the moved tree
    g(repo, "worktree", "prune")
    assert worktrees.is_valid(dst, repo)
    with pytest.raises(GitError, match="already locked"):
        worktrees.cmd.run(["worktree", "lock", str(dst)], repo)
    worktrees.unlock(repo, dst)  # git's own unlock undoes it
    assert "locked" not in g(repo, "worktree", "list", "--porcelain").split("\n\n")[1]
    admin = Path(g(dst, "rev-parse", "--absolute-git-dir"))
    assert sorted(p.name for p in admin.iterdir() if "dispatcher" in p.name) == []
    worktrees.remove(repo, dst)
    assert not dst.exists() and len(worktrees.entries(repo)) == 1


def test_a_tree_with_a_submodule_is_moved_by_git_which_refuses(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = init_repo(tmp_path / "sub")
    g(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "lib")
    g(repo, "commit", "-qm", "submodule")
    src, dst = tmp_path / "pool" / "idle-1", tmp_path / "wts" / "8"
    worktrees.add_detached(repo, src, "main")
    calls = _counting_git(monkeypatch)
    worktrees.move(repo, src, dst)  # a gitlink in the index: git decides (not populated: moved)
    assert [c[:2] for c in calls] == [["worktree", "move"]]
    assert worktrees.is_valid(dst, repo)
    g(dst, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
    with pytest.raises(GitError, match="submodules cannot be moved"):
        worktrees.move(repo, dst, src)  # populated: git refuses, as before
    assert worktrees.is_valid(dst, repo) and not src.exists()
