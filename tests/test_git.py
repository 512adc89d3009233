"""dispatcher.git against real git repositories in tmp_path (git is never mocked)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dispatcher.errors import (
    AlreadyExists,
    DirtyCheckout,
    GitError,
    InvalidInput,
    InvalidState,
    MergeConflict,
    NotFound,
    RefMoved,
)
from dispatcher.git import cmd, commits, merge, names, refs, worktrees
from dispatcher.git import journal as merge_journal
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g

AGENT = {"author_name": "Dispatcher Bot", "author_email": "bot@dispatcher.invalid"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", files={"README.md": "hello\n", "a.txt": "a\n"})


def head(repo: Path, rev: str = "HEAD") -> str:
    return g(repo, "rev-parse", rev)


def has_branch(repo: Path, name: str) -> bool:
    return bool(g(repo, "for-each-ref", f"refs/heads/{name}"))


# --- environment and plumbing ------------------------------------------------------


def test_clean_env_strips_repo_variables_and_keeps_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        monkeypatch.setenv(name, "/elsewhere")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.editor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i key")
    monkeypatch.setenv("NOT_GIT", "kept")

    env = cmd.clean_env({"EXTRA": "1"})

    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        assert name not in env
    assert env["GIT_AUTHOR_NAME"] == "Test Author"
    assert env["GIT_COMMITTER_EMAIL"] == "committer@example.com"
    assert env["GIT_CONFIG_KEY_0"] == "core.editor"
    assert env["GIT_CONFIG_VALUE_0"] == "true"
    assert env["GIT_SSH_COMMAND"] == "ssh -i key"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["NOT_GIT"] == "kept"
    assert env["EXTRA"] == "1"


def test_inherited_git_dir_does_not_redirect_commands(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = init_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert refs.rev_parse(repo, "HEAD") != refs.rev_parse(other, "HEAD")
    assert refs.toplevel(repo) == repo.resolve()


def test_git_error_shows_command_code_and_stderr(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        cmd.run(["rev-parse", "--verify", "no-such-ref"], repo)
    message = info.value.message
    assert "git rev-parse --verify no-such-ref" in message
    assert "exited 128" in message
    assert "fatal" in message


def test_git_in_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        cmd.run(["status"], tmp_path / "missing")


# --- repositories and names -----------------------------------------------------------


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


@pytest.mark.parametrize("name", ["dispatcher/1-fix", "main", "feature/x.y_z", "a-b"])
def test_validate_branch_name_accepts(name: str) -> None:
    assert names.validate_branch_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "--upload-pack=x",
        "-x",
        "a..b",
        "a b",
        "x@{1}",
        "@{-1}",
        "",
        "a\x00b",
        "a\nb",
        "refs/../x",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "x.lock",
        "x/",
        "/x",
        "a//b",
        ".hidden",
        "HEAD",
        "@",
    ],
)
def test_validate_branch_name_refuses(name: str) -> None:
    with pytest.raises(InvalidInput):
        names.validate_branch_name(name)


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


# --- worktrees -----------------------------------------------------------------------


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


# --- working tree state and commits --------------------------------------------------


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


# --- diffs ---------------------------------------------------------------------------------


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


# --- merge_check -------------------------------------------------------------------


def make_job(repo: Path, *changes: tuple[str, str], author: str | None = None) -> tuple[str, str]:
    """A branch "job" off main's current tip with one commit per change; (base, tip)."""
    base = head(repo)
    g(repo, "checkout", "-q", "-b", "job")
    as_author = [f"--author={author} <{author.lower()}@agents.test>"] if author else []
    for rel, content in changes:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(content)
        g(repo, "add", "--", rel)
        g(repo, "commit", "-q", *as_author, "-m", f"job: {rel}\n\nbody of {rel}")
    tip = head(repo)
    g(repo, "checkout", "-q", "main")
    return base, tip


def test_merge_check_clean_and_conflict(repo: Path) -> None:
    _, clean_tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    check = merge.merge_check(repo, moved, clean_tip)
    assert check.clean
    assert check.conflicts == []
    assert set(g(repo, "ls-tree", "--name-only", check.tree).split()) == {
        "README.md",
        "a.txt",
        "job.txt",
        "main.txt",
    }

    g(repo, "branch", "-q", "-D", "job")
    _, conflict_tip = make_job(repo, ("a.txt", "job\n"), ("README.md", "job\n"))
    commit_file(repo, "a.txt", "main\n")
    commit_file(repo, "README.md", "main\n")
    check = merge.merge_check(repo, "main", conflict_tip)
    assert not check.clean
    assert check.conflicts == ["README.md", "a.txt"]
    assert head(repo, "main") != conflict_tip  # nothing moved


# --- merge -------------------------------------------------------------------------


def do_merge(
    repo: Path, tmp_path: Path, strategy: str, base: str, source: str, target: str = "main"
) -> str:
    return merge.merge(
        repo,
        strategy=strategy,
        target_branch=target,
        source=source,
        base=base,
        message=f"Land job ({strategy})",
        journal=tmp_path / "merges" / "job.json",
        **AGENT,
    )


def parents(repo: Path, sha: str) -> list[str]:
    return g(repo, "rev-list", "--parents", "-n1", sha).split()[1:]


def assert_no_temp_worktrees(repo: Path, tmp_path: Path) -> None:
    assert len(worktrees.entries(repo)) == 1
    wdir = tmp_path / "worktrees"
    assert not wdir.exists() or not any(wdir.iterdir())


def test_merge_ff(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"), ("a.txt", "changed\n"))
    assert do_merge(repo, tmp_path, "ff", base, tip) == tip
    assert head(repo, "main") == tip
    assert (repo / "job.txt").read_text() == "job\n"  # the user's checkout followed
    assert (repo / "a.txt").read_text() == "changed\n"
    assert commits.status_porcelain(repo) == []


def test_merge_ff_refused_when_target_moved(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    with pytest.raises(MergeConflict, match="cannot fast-forward main") as info:
        do_merge(repo, tmp_path, "ff", base, tip)
    assert info.value.details == {"files": []}
    assert head(repo, "main") == moved
    assert not (repo / "job.txt").exists()


def test_merge_creates_merge_commit(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    new = do_merge(repo, tmp_path, "merge", base, tip)
    assert head(repo, "main") == new
    assert parents(repo, new) == [moved, tip]
    assert g(repo, "log", "-1", "--format=%s|%an|%cn", new) == (
        "Land job (merge)|Dispatcher Bot|Dispatcher Bot"
    )
    assert (repo / "job.txt").read_text() == "job\n"
    assert (repo / "main.txt").read_text() == "main\n"
    assert commits.status_porcelain(repo) == []


def test_merge_always_makes_a_merge_commit_even_when_ff_possible(
    repo: Path, tmp_path: Path
) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    new = do_merge(repo, tmp_path, "merge", base, tip)
    assert parents(repo, new) == [base, tip]


def test_merge_squash(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"), ("a.txt", "changed\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    new = do_merge(repo, tmp_path, "squash", base, tip)
    assert head(repo, "main") == new
    assert parents(repo, new) == [moved]
    assert g(repo, "log", "-1", "--format=%B", new) == "Land job (squash)"
    assert g(repo, "diff", "--name-only", moved, new).split() == ["a.txt", "job.txt"]
    assert (repo / "a.txt").read_text() == "changed\n"
    # Squashing the same job again finds nothing to land.
    assert do_merge(repo, tmp_path, "squash", base, tip) == new


def test_merge_rebase_replays_commits_keeping_authors(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2001-02-03T04:05:06+0700")
    base, tip = make_job(repo, ("job.txt", "job\n"), ("a.txt", "changed\n"), author="Agent")
    monkeypatch.delenv("GIT_AUTHOR_DATE")
    original_date = g(repo, "log", "-1", "--format=%ad", "--date=raw", tip)
    assert original_date == "981147906 +0700"
    moved = commit_file(repo, "main.txt", "main\n")

    new = do_merge(repo, tmp_path, "rebase", base, tip)

    assert head(repo, "main") == new
    log = g(repo, "log", "--format=%H|%P|%an|%ae|%ad|%cn|%s", "--date=raw", f"{moved}..{new}")
    second, first = (line.split("|") for line in log.splitlines())
    assert second[0] == new
    assert second[1] == first[0]  # linear ...
    assert first[1] == moved  # ... on top of the moved target
    for entry, subject in ((first, "job: job.txt"), (second, "job: a.txt")):
        assert entry[2:] == [
            "Agent",
            "agent@agents.test",
            original_date,
            "Dispatcher Bot",
            subject,
        ]
    assert g(repo, "log", "-1", "--format=%B", new) == "job: a.txt\n\nbody of a.txt"
    assert g(repo, "rev-parse", f"{new}^{{tree}}") == merge.merge_check(repo, moved, tip).tree
    assert (repo / "job.txt").read_text() == "job\n"
    assert (repo / "a.txt").read_text() == "changed\n"


def test_merge_rebase_onto_unmoved_target_keeps_the_commits(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"), ("a.txt", "changed\n"))
    assert do_merge(repo, tmp_path, "rebase", base, tip) == tip


def test_merge_rebase_drops_commits_already_upstream(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("main.txt", "same\n"), ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "same\n")
    new = do_merge(repo, tmp_path, "rebase", base, tip)
    assert g(repo, "log", "--format=%s", f"{moved}..{new}") == "job: job.txt"


def test_merge_rebase_skips_merge_commits_in_the_job(repo: Path, tmp_path: Path) -> None:
    base, _ = make_job(repo, ("job.txt", "job\n"))
    g(repo, "checkout", "-q", "-b", "side", base)
    commit_file(repo, "side.txt", "side\n", "side work")
    g(repo, "checkout", "-q", "job")
    g(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    tip = head(repo)
    g(repo, "checkout", "-q", "main")
    moved = commit_file(repo, "main.txt", "main\n")
    new = do_merge(repo, tmp_path, "rebase", base, tip)
    subjects = g(repo, "log", "--format=%s", f"{moved}..{new}").splitlines()
    assert sorted(subjects) == ["job: job.txt", "side work"]
    assert g(repo, "rev-list", "--merges", f"{moved}..{new}") == ""
    assert (repo / "side.txt").exists()


@pytest.mark.parametrize("strategy", ["merge", "squash", "rebase"])
def test_merge_conflict_changes_nothing(repo: Path, tmp_path: Path, strategy: str) -> None:
    base, tip = make_job(repo, ("a.txt", "job\n"), ("job.txt", "job\n"))
    moved = commit_file(repo, "a.txt", "main\n")
    with pytest.raises(MergeConflict, match=r"merge conflict in 1 file\(s\): a.txt") as info:
        do_merge(repo, tmp_path, strategy, base, tip)
    assert info.value.details == {"files": ["a.txt"]}
    assert head(repo, "main") == moved
    assert (repo / "a.txt").read_text() == "main\n"
    assert commits.status_porcelain(repo) == []
    assert_no_temp_worktrees(repo, tmp_path)


def test_merge_rebase_conflict_in_a_middle_commit(repo: Path, tmp_path: Path) -> None:
    # The job's net change to a.txt is nothing, so a merge is clean; a replay is not.
    base, tip = make_job(repo, ("a.txt", "job\n"), ("a.txt", "a\n"), ("job.txt", "job\n"))
    moved = commit_file(repo, "a.txt", "main\n")
    assert merge.merge_check(repo, moved, tip).clean
    with pytest.raises(MergeConflict, match="rebase conflict applying") as info:
        do_merge(repo, tmp_path, "rebase", base, tip)
    assert info.value.details == {"files": ["a.txt"]}
    assert head(repo, "main") == moved
    assert_no_temp_worktrees(repo, tmp_path)


@pytest.mark.parametrize("strategy", ["ff", "merge", "squash", "rebase"])
def test_merge_already_merged_is_unchanged(repo: Path, tmp_path: Path, strategy: str) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    g(repo, "merge", "-q", "--no-ff", "-m", "by hand", "job")
    old = head(repo)
    assert do_merge(repo, tmp_path, strategy, base, tip) == old
    assert head(repo, "main") == old


def test_merge_refuses_dirty_checkout(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    edit = b"my precious edit\r\n\x00\xff"
    (repo / "README.md").write_bytes(edit)
    with pytest.raises(DirtyCheckout, match=r"README\.md") as info:
        do_merge(repo, tmp_path, "merge", base, tip)
    assert info.value.details == {"files": ["README.md"], "worktree": str(repo.resolve())}
    assert "commit or stash them first" in info.value.message
    assert head(repo, "main") == moved
    assert (repo / "README.md").read_bytes() == edit
    assert not (repo / "job.txt").exists()


def test_merge_refuses_staged_changes(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    (repo / "staged.txt").write_text("staged\n")
    g(repo, "add", "staged.txt")
    with pytest.raises(DirtyCheckout, match=r"staged\.txt"):
        do_merge(repo, tmp_path, "ff", base, tip)
    assert head(repo, "main") == base


def test_merge_refuses_to_overwrite_untracked_file(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    (repo / "job.txt").write_text("mine, untracked\n")
    (repo / "notes.txt").write_text("unrelated\n")
    with pytest.raises(DirtyCheckout, match=r"untracked or ignored files: job\.txt") as info:
        do_merge(repo, tmp_path, "squash", base, tip)
    assert info.value.details["files"] == ["job.txt"]
    assert head(repo, "main") == moved
    assert (repo / "job.txt").read_text() == "mine, untracked\n"
    assert g(repo, "status", "--porcelain").splitlines() == ["?? job.txt", "?? notes.txt"]

    (repo / "job.txt").unlink()  # an untracked file out of the way does not block
    new = do_merge(repo, tmp_path, "squash", base, tip)
    assert head(repo, "main") == new
    assert (repo / "notes.txt").read_text() == "unrelated\n"


def test_merge_into_branch_not_checked_out_moves_only_the_ref(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    g(repo, "checkout", "-q", "-b", "mine", base)
    (repo / "README.md").write_text("dirty on another branch\n")
    new = do_merge(repo, tmp_path, "merge", base, tip)
    assert head(repo, "main") == new
    assert parents(repo, new) == [moved, tip]
    assert g(repo, "symbolic-ref", "--short", "HEAD") == "mine"
    assert head(repo) == base
    assert not (repo / "job.txt").exists()
    assert (repo / "README.md").read_text() == "dirty on another branch\n"
    assert "dispatcher merge: Land job (merge)" in g(repo, "reflog", "-1", "main")


def test_merge_into_branch_checked_out_in_linked_worktree(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    g(repo, "checkout", "-q", "--detach")
    wt = tmp_path / "release-wt"
    g(repo, "worktree", "add", "-q", str(wt), "main")
    new = do_merge(repo, tmp_path, "rebase", base, tip)
    assert new == tip
    assert head(wt) == tip
    assert (wt / "job.txt").read_text() == "job\n"


def test_merge_bad_arguments(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    with pytest.raises(InvalidInput, match="unknown merge strategy"):
        do_merge(repo, tmp_path, "octopus", base, tip)
    with pytest.raises(NotFound, match="no such branch"):
        do_merge(repo, tmp_path, "merge", base, tip, target="nope")
    with pytest.raises(InvalidInput):
        do_merge(repo, tmp_path, "merge", base, tip, target="-main")
    with pytest.raises(NotFound):
        do_merge(repo, tmp_path, "merge", base, "deadbeef" * 5)
    with pytest.raises(InvalidInput):
        do_merge(repo, tmp_path, "merge", base, "--help")
    assert head(repo, "main") == base


def test_cas_update_refuses_a_stale_old_value(repo: Path) -> None:
    first = head(repo)
    second = commit_file(repo, "b.txt", "b\n")
    g(repo, "branch", "target", first)
    merge._cas_update(repo, "refs/heads/target", second, first, "move")
    assert head(repo, "target") == second
    with pytest.raises(RefMoved, match="nothing was changed"):
        merge._cas_update(repo, "refs/heads/target", first, first, "stale")
    assert head(repo, "target") == second


def test_land_refuses_when_checkout_moved(repo: Path, tmp_path: Path) -> None:
    base, tip = make_job(repo, ("job.txt", "job\n"))
    moved = commit_file(repo, "main.txt", "main\n")
    journal = tmp_path / "merges" / "1.json"
    intent = merge._Intent(label="1", strategy="ff", source=tip)
    with pytest.raises(RefMoved, match="main moved during the merge"):
        merge._land(repo, "main", base, tip, "stale", journal=journal, landing=intent)
    assert head(repo, "main") == moved
    g(repo, "checkout", "-q", "job")
    with pytest.raises(RefMoved, match="main moved during the merge"):
        merge._land(repo, "main", base, tip, "stale", journal=journal, landing=intent)
    assert head(repo, "main") == moved
    assert not journal.exists()  # nothing moved: nothing for a restart to finish


# --- saving and checking worktrees ---------------------------------------------------


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


# --- landing on a checked-out target: refusals, journal, recovery -------------------


def test_merge_refuses_ignored_files_in_the_way_and_a_directory_of_them(
    repo: Path, tmp_path: Path
) -> None:
    (repo / ".gitignore").write_text("/secrets.env\n/cache\n")
    g(repo, "add", ".gitignore")
    g(repo, "commit", "-qm", "ignore")
    g(repo, "checkout", "-q", "-b", "job")
    base = head(repo)
    (repo / "secrets.env").write_text("job\n")
    (repo / "cache").write_text("job\n")
    g(repo, "add", "-f", "secrets.env", "cache")
    g(repo, "commit", "-qm", "job")
    tip = head(repo)
    g(repo, "checkout", "-q", "main")
    (repo / "secrets.env").write_text("mine\n")
    (repo / "cache").mkdir()
    (repo / "cache" / "blob").write_text("mine\n")
    with pytest.raises(DirtyCheckout, match=r"untracked or ignored files: cache, secrets\.env"):
        do_merge(repo, tmp_path, "ff", base, tip)
    assert head(repo, "main") == base
    assert (repo / "secrets.env").read_text() == "mine\n"
    assert (repo / "cache" / "blob").read_text() == "mine\n"
    assert not (tmp_path / "merges" / "job.json").exists()


def test_merge_into_a_checkout_leaves_its_journal_for_the_caller(
    repo: Path, tmp_path: Path
) -> None:

    base, tip = make_job(repo, ("job.txt", "job\n"))
    journal = tmp_path / "merges" / "job.json"
    assert do_merge(repo, tmp_path, "ff", base, tip) == tip
    landing = merge_journal.read(journal)
    assert (landing.target, landing.old, landing.new, landing.strategy) == ("main", base, tip, "ff")
    assert landing.worktree == str(repo.resolve())
    assert merge.recover_landing(landing)  # landed and finished: recovery has nothing to do
    assert commits.status_porcelain(repo) == []
    assert sorted(p.name for p in (repo / ".git").glob("index*")) == ["index"]


def test_recover_landing_puts_back_only_what_the_merge_wrote(repo: Path, tmp_path: Path) -> None:
    """A crash after some files moved and before the ref did: files holding the merge's
    content go back, the user's own content stays, our index.lock goes."""

    base, tip = make_job(repo, ("new.txt", "new\n"), ("a.txt", "job\n"), ("README.md", "job\n"))
    index = merge._index_file(repo)
    landing = merge_journal.Landing(
        label="7", repo=str(repo), target="main", old=base, new=tip, strategy="ff",
        source=tip, nonce="abc", worktree=str(repo), index=str(index),
    )  # fmt: skip
    merge._IndexLock(index, "abc").acquire(repo)
    (repo / "new.txt").write_text("new\n")  # written by the merge
    (repo / "a.txt").write_text("job\n")  # written by the merge
    (repo / "README.md").write_text("the user's\n")  # neither before nor after
    assert not merge.recover_landing(landing)
    assert not (repo / "new.txt").exists()
    assert (repo / "a.txt").read_text() == "a\n"
    assert (repo / "README.md").read_text() == "the user's\n"
    assert not (repo / ".git" / "index.lock").exists()
    assert sorted(p.name for p in (repo / ".git").glob("index*")) == ["index"]
    assert head(repo, "main") == base


def test_recover_landing_never_takes_a_lock_that_is_not_ours(repo: Path, tmp_path: Path) -> None:

    base, tip = make_job(repo, ("new.txt", "new\n"))
    index = merge._index_file(repo)
    (repo / ".git" / "index.lock").write_text("the user's git\n")
    landing = merge_journal.Landing(
        label="7", repo=str(repo), target="main", old=base, new=tip, strategy="ff",
        source=tip, nonce="abc", worktree=str(repo), index=str(index),
    )  # fmt: skip
    with pytest.raises(InvalidState, match="another git command is running"):
        merge._IndexLock(index, "abc").acquire(repo)
    assert not merge.recover_landing(landing)
    assert (repo / ".git" / "index.lock").read_text() == "the user's git\n"


def test_merge_journal_refuses_what_it_cannot_read(tmp_path: Path) -> None:

    path = tmp_path / "1.json"
    for text in ("{nope", "[]", '{"version": 1, "label": "1"}', '{"version": 9}'):
        path.write_text(text)
        with pytest.raises(ValueError, match="merge journal"):
            merge_journal.read(path)
    aside = merge_journal.move_aside(path)
    assert not path.exists() and aside.name.startswith("1.json.bad-")
    assert merge_journal.pending(tmp_path) == []


@pytest.mark.parametrize(
    ("exist", "pinned"),
    [
        ((), "/dev/null"),
        ((".gitconfig",), ".gitconfig"),
        ((".config/git/config",), ".config/git/config"),
        ((".gitconfig", ".config/git/config"), None),
    ],
)
def test_pin_global_config_fixes_what_the_daemons_git_reads(
    tmp_path: Path, exist: tuple[str, ...], pinned: str | None
) -> None:
    for name in exist:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("[user]\n\tname = x\n")
    try:
        got = cmd.pin_global_config({"HOME": str(tmp_path)})
        want = (
            None if pinned is None else pinned if pinned == "/dev/null" else str(tmp_path / pinned)
        )
        assert got == want
        if pinned is None:  # both exist (and the sandbox keeps both read-only)
            return
        # A global config made after the pin (an agent's) is not read by the daemon's git.
        for name in {".gitconfig", ".config/git/config"} - set(exist):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("[user]\n\tname = planted\n")
        read = cmd.run(["config", "--global", "--get", "user.name"], tmp_path, check=False)
        assert read.stdout.strip() == ("x" if exist else "")  # the pinned file, or none
    finally:
        cmd.pin_global_config({"HOME": str(tmp_path), "GIT_CONFIG_GLOBAL": os.devnull})
        cmd._pinned_global.clear()


def test_pin_global_config_with_a_missing_git_config_global_reads_none(tmp_path: Path) -> None:
    try:
        assert cmd.pin_global_config({"GIT_CONFIG_GLOBAL": str(tmp_path / "nope")}) == os.devnull
    finally:
        cmd._pinned_global.clear()
