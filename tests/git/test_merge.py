"""dispatcher.git.merge: merges computed without a worktree, landed safely, recovered."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import (
    DirtyCheckout,
    InvalidInput,
    InvalidState,
    MergeConflict,
    NotFound,
    RefMoved,
)
from dispatcher.git import commits, merge, worktrees
from dispatcher.git import journal as merge_journal
from tests.git.helpers import AGENT, head
from tests.gitutil import commit_file
from tests.gitutil import git as g


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
    check = merge._merge_check(repo, moved, clean_tip)
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
    check = merge._merge_check(repo, "main", conflict_tip)
    assert not check.clean
    assert check.conflicts == ["README.md", "a.txt"]
    assert head(repo, "main") != conflict_tip  # nothing moved


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
    assert g(repo, "rev-parse", f"{new}^{{tree}}") == merge._merge_check(repo, moved, tip).tree
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
    assert merge._merge_check(repo, moved, tip).clean
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
