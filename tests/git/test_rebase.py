"""dispatcher.git.rebase: a branch replayed onto another with no worktree, landed by CAS."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import InvalidState, MergeConflict, RefMoved
from dispatcher.git import rebase
from dispatcher.git.names import identity
from tests.git.helpers import AGENT, head
from tests.gitutil import commit_file
from tests.gitutil import git as g

IDENT = identity(AGENT["author_name"], AGENT["author_email"])


def job_branch(repo: Path, *changes: tuple[str, str]) -> tuple[str, str]:
    """Branch "job" off main with one commit per change; (base, tip); main checked out."""
    base = head(repo)
    g(repo, "checkout", "-q", "-b", "job")
    for rel, content in changes:
        commit_file(repo, rel, content, f"job: {rel}")
    tip = head(repo)
    g(repo, "checkout", "-q", "main")
    return base, tip


def run(
    repo: Path, tmp_path: Path, base: str, tip: str, onto: str, worktree: Path | None = None
) -> rebase.Rebased:
    return rebase.rebase_branch(
        repo, "job", head=tip, base=base, onto=onto, ident=IDENT, message="Merge main into job",
        journal=tmp_path / "journal.json", label="rebase-1", worktree=worktree,
    )  # fmt: skip


def test_commits_are_replayed_onto_the_new_tip_and_main_is_untouched(
    repo: Path, tmp_path: Path
) -> None:
    base, tip = job_branch(repo, ("one.txt", "1\n"), ("two.txt", "2\n"))
    onto = commit_file(repo, "main.txt", "main\n")
    status = g(repo, "status", "--porcelain")
    done = run(repo, tmp_path, base, tip, onto)
    assert done.how == "replayed" and head(repo, "job") == done.tip
    assert g(repo, "rev-list", "--count", f"{onto}..job") == "2"
    assert g(repo, "log", "--format=%s", "-2", "job").splitlines() == [
        "job: two.txt",
        "job: one.txt",
    ]
    assert head(repo) == onto and g(repo, "status", "--porcelain") == status


def test_a_conflict_changes_nothing_and_names_the_files(repo: Path, tmp_path: Path) -> None:
    base, tip = job_branch(repo, ("a.txt", "job\n"))
    onto = commit_file(repo, "a.txt", "main\n")
    with pytest.raises(MergeConflict) as info:
        run(repo, tmp_path, base, tip, onto)
    assert info.value.details["files"] == ["a.txt"]
    assert head(repo, "job") == tip and not (tmp_path / "journal.json").exists()


def test_commits_that_conflict_one_by_one_but_merge_cleanly_get_a_merge(
    repo: Path, tmp_path: Path
) -> None:
    # The job changes a.txt and changes it back; main changes it: a replay of the first
    # commit conflicts, the whole (no change to a.txt) merges cleanly.
    base, tip = job_branch(repo, ("a.txt", "job\n"), ("a.txt", "a\n"), ("b.txt", "b\n"))
    onto = commit_file(repo, "a.txt", "main\n")
    done = run(repo, tmp_path, base, tip, onto)
    assert done.how == "merged"
    assert g(repo, "rev-parse", f"{done.tip}^1", f"{done.tip}^2").splitlines() == [tip, onto]
    assert g(repo, "show", f"{done.tip}:a.txt") == "main"


def test_the_cas_refuses_a_branch_that_moved(repo: Path, tmp_path: Path) -> None:
    base, tip = job_branch(repo, ("one.txt", "1\n"))
    onto = commit_file(repo, "main.txt", "main\n")
    g(repo, "checkout", "-q", "job")
    late = commit_file(repo, "late.txt", "late\n")
    g(repo, "checkout", "-q", "main")
    with pytest.raises(RefMoved):
        run(repo, tmp_path, base, tip, onto)
    assert head(repo, "job") == late


def test_a_checked_out_branch_moves_with_its_files(repo: Path, tmp_path: Path) -> None:
    base, tip = job_branch(repo, ("one.txt", "1\n"))
    onto = commit_file(repo, "main.txt", "main\n")
    wt = tmp_path / "wt"
    g(repo, "worktree", "add", "-q", str(wt), "job")
    done = run(repo, tmp_path, base, tip, onto, worktree=wt)
    assert head(wt) == done.tip and (wt / "main.txt").read_text() == "main\n"
    assert g(wt, "status", "--porcelain") == ""


def test_the_branch_checked_out_elsewhere_is_refused_and_nothing_moves(
    repo: Path, tmp_path: Path
) -> None:
    base, tip = job_branch(repo, ("one.txt", "1\n"))
    onto = commit_file(repo, "main.txt", "main\n")
    user = tmp_path / "user"
    g(repo, "worktree", "add", "-q", str(user), "job")  # clean: nothing else refuses it
    for own in (None, tmp_path / "job-wt"):  # the job's worktree gone, or elsewhere
        with pytest.raises(InvalidState) as caught:
            run(repo, tmp_path, base, tip, onto, worktree=own)
        assert str(caught.value) == (
            f"job is checked out in {user}, which the daemon does not move; check out "
            "another branch there and try again (nothing was changed)"
        )
    assert head(repo, "job") == tip and head(user) == tip
    assert g(user, "status", "--porcelain") == "" and not (user / "main.txt").exists()
    assert not (tmp_path / "journal.json").exists()


def test_start_merge_leaves_markers_and_abort_takes_them_back(repo: Path, tmp_path: Path) -> None:
    _, tip = job_branch(repo, ("a.txt", "job\n"))
    onto = commit_file(repo, "a.txt", "main\n")
    wt = tmp_path / "wt"
    g(repo, "worktree", "add", "-q", str(wt), "job")
    files = rebase.start_merge(wt, "job", head=tip, onto=onto, message="m", ident=IDENT)
    assert files == ["a.txt"] and "<<<<<<<" in (wt / "a.txt").read_text()
    assert head(repo, "job") == tip and g(wt, "rev-parse", "MERGE_HEAD") == onto
    rebase.abort_merge(wt)
    assert (wt / "a.txt").read_text() == "job\n" and g(wt, "status", "--porcelain") == ""
    (wt / "a.txt").write_text("dirty\n")
    with pytest.raises(InvalidState, match=r"uncommitted changes in a\.txt"):
        rebase.start_merge(wt, "job", head=tip, onto=onto, message="m", ident=IDENT)


def test_a_merge_of_ours_left_under_way_is_started_again(repo: Path, tmp_path: Path) -> None:
    _, tip = job_branch(repo, ("a.txt", "job\n"))
    onto = commit_file(repo, "a.txt", "main\n")
    wt = tmp_path / "wt"
    g(repo, "worktree", "add", "-q", str(wt), "job")
    message = f"Merge main into job\n\n{rebase.MARK} {onto[:12]}.\n"
    rebase.start_merge(wt, "job", head=tip, onto=onto, message=message, ident=IDENT)
    # A crash: no follow-up was made. The next rebase starts the merge afresh.
    again = rebase.start_merge(wt, "job", head=tip, onto=onto, message=message, ident=IDENT)
    assert again == ["a.txt"] and g(wt, "rev-parse", "MERGE_HEAD") == onto


def test_markers_left_names_the_conflicted_files_still_holding_markers(
    repo: Path, tmp_path: Path
) -> None:
    _, tip = job_branch(repo, ("a.txt", "job\n"), ("b.txt", "job\n"))
    commit_file(repo, "a.txt", "main\n")
    onto = commit_file(repo, "b.txt", "main\n")
    wt = tmp_path / "wt"
    g(repo, "worktree", "add", "-q", str(wt), "job")
    message = f"Merge main into job\n\n{rebase.MARK} {onto[:12]}.\n"
    rebase.start_merge(wt, "job", head=tip, onto=onto, message=message, ident=IDENT)
    assert rebase.ours_under_way(wt) and rebase.markers_left(wt) == ["a.txt", "b.txt"]
    g(wt, "add", "a.txt")  # staged with its markers: still named
    (wt / "b.txt").write_text("job\nmain\n")
    assert rebase.markers_left(wt) == ["a.txt"]
    (wt / "a.txt").write_text("a line with <<<<<<< inside is no marker\n=======\n")
    assert rebase.markers_left(wt) == []
