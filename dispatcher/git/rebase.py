"""Bringing a branch up to date with another: replayed in the object database, landed by CAS.

:func:`rebase_branch` computes the branch's new tip with no worktree (each commit
replayed with ``merge-tree --write-tree`` and ``commit-tree``, as the ``rebase`` merge
strategy does, :mod:`dispatcher.git.merge`) and moves the branch from its old tip by
compare-and-swap; the job's own worktree, when it has the branch checked out, is
moved with it, under its ``index.lock``, as a merge into a checked-out branch is (the
branch checked out anywhere else is refused). Nothing changes
when it conflicts. :func:`start_merge` writes a conflicted merge into a worktree (the
files with their markers, ``MERGE_HEAD``) for an agent to resolve, and
:func:`abort_merge` takes it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dispatcher import faults
from dispatcher.errors import GitError, InvalidState, MergeConflict, RefMoved
from dispatcher.git import cmd, dotgit
from dispatcher.git.commits import commit_tree, status_porcelain
from dispatcher.git.merge import _conflict, _Intent, _land, _merge_check, _rebase, _target_lock
from dispatcher.git.names import check_rev, validate_branch_name
from dispatcher.git.refs import branch_head, head_commit, is_ancestor
from dispatcher.git.worktrees import current_branch


@dataclass(frozen=True)
class Rebased:
    """What :func:`rebase_branch` did."""

    tip: str  # the branch's new tip (its old one when it was on ``onto`` already)
    how: str  # "replayed" (its commits, onto onto), "merged" (a merge of onto), "current"


def has_merges(repo: Path, base: str, head: str) -> bool:
    """True if ``base..head`` holds a merge commit."""
    out = cmd.run(
        ["rev-list", "--merges", "--max-count=1", "--end-of-options",
         f"{check_rev(base)}..{check_rev(head)}"],
        repo,
    ).stdout  # fmt: skip
    return bool(out.strip())


def rebase_branch(
    repo: Path,
    branch: str,
    *,
    head: str,
    base: str,
    onto: str,
    ident: Mapping[str, str],
    message: str,
    journal: Path,
    label: str,
    worktree: Path | None,
) -> Rebased:
    """Move ``branch`` (at ``head``, made from ``base``) onto commit ``onto``.

    Its non-merge commits of ``base..head`` are replayed onto ``onto`` (authors, dates
    and messages kept; committer ``ident``). When that conflicts, or the branch already
    holds a merge, a merge of ``onto`` into it (``message``) is made instead if it is
    clean. :class:`MergeConflict` (``details["files"]``) when both conflict; RefMoved
    when the branch is no longer at ``head`` by the time it would move. Either way
    nothing changed. Only ``worktree`` (the job's own checkout of the branch, None when
    it has none) is moved with it: the branch checked out anywhere else is refused
    (InvalidState naming the path, nothing changed). The move is journaled at
    ``journal`` (``label``, and ``onto``) for a restart to finish or undo its checkout's
    files (:func:`dispatcher.git.merge.recover_landing`) and record the rebase on the
    job; the caller discards it once it has recorded the rebase.
    """
    validate_branch_name(branch)
    for rev in (head, base, onto):
        check_rev(rev)
    if is_ancestor(repo, onto, head):
        return Rebased(head, "current")
    with _target_lock(repo, branch):
        if branch_head(repo, branch) != head:
            raise_moved(repo, branch, head)
        new, how = _new_tip(repo, head=head, base=base, onto=onto, ident=ident, message=message)
        faults.reach("rebase.computed")
        intent = _Intent(label=label, strategy="rebase", source=head, onto=onto)
        reflog = f"dispatcher rebase: onto {onto[:12]}"
        _land(
            repo, branch, head, new, reflog, journal=journal, landing=intent,
            only_checkout=worktree,
        )  # fmt: skip
        return Rebased(new, how)


def _new_tip(
    repo: Path, *, head: str, base: str, onto: str, ident: Mapping[str, str], message: str
) -> tuple[str, str]:
    if not has_merges(repo, base, head):
        try:
            return _rebase(repo, onto, base, head, ident), "replayed"
        except MergeConflict:
            pass  # one commit at a time conflicts; the whole may merge cleanly
    check = _merge_check(repo, head, onto)
    if not check.clean:
        raise _conflict(check.conflicts, "conflict bringing the branch onto its target")
    return commit_tree(repo, check.tree, [head, onto], message, ident), "merged"


def raise_moved(repo: Path, branch: str, expected: str) -> None:
    """RefMoved: ``branch`` is not at ``expected`` (any more)."""
    now = branch_head(repo, branch)
    raise RefMoved(
        f"{branch} moved (expected {expected[:12]}, found {(now or 'nothing')[:12]}); "
        "nothing was changed, try again"
    )


def start_merge(
    worktree: Path, branch: str, *, head: str, onto: str, message: str, ident: Mapping[str, str]
) -> list[str]:
    """Start a merge of ``onto`` into ``branch`` checked out in ``worktree`` (at ``head``,
    its tracked files clean), stopping at its conflicts: the files with their markers,
    ``MERGE_HEAD`` and ``MERGE_MSG`` (``message``) written, nothing committed; the next
    ``git commit`` there makes the merge. The conflicting paths, sorted.

    Refused (InvalidState, nothing touched) when the worktree is not on ``branch`` at
    ``head`` or has uncommitted changes to tracked files. A merge that stops for any
    other reason is aborted and raised as :class:`GitError`. A merge of ours found under
    way (``message`` holds :data:`MARK`: a crash left it without its follow-up) is
    aborted first.
    """
    if ours_under_way(worktree):  # a crash fell between this and its follow-up
        abort_merge(worktree)
    if current_branch(worktree) != branch or head_commit(worktree) != head:
        raise InvalidState(f"the worktree {worktree} is no longer on {branch} at {head[:12]}")
    dirty = status_porcelain(worktree, untracked=False)
    if dirty:
        raise InvalidState(
            f"the worktree {worktree} has uncommitted changes in {', '.join(dirty[:10])}; "
            "commit or discard them first"
        )
    result = cmd.run(
        ["-c", "rerere.enabled=false", "merge", "--no-ff", "--no-commit", "--no-verify",
         "-m", message, check_rev(onto)],
        worktree, check=False, env_extra=dict(ident),
    )  # fmt: skip
    conflicts = unmerged(worktree)
    if result.returncode == 0 or not conflicts:
        abort_merge(worktree)
        raise GitError(cmd.failure(result) if result.returncode else "the merge did not conflict")
    _git_path(worktree, _CONFLICTS).write_text("\0".join(conflicts), encoding="utf-8")
    return conflicts


_CONFLICTS = "dispatcher-merge-conflicts"
"""Beside ``MERGE_MSG``: the paths :func:`start_merge` stopped at, NUL-separated (an
agent's ``git add`` takes them out of the index's unmerged entries)."""


def _git_path(worktree: Path, name: str) -> Path:
    out = cmd.run(["rev-parse", "--path-format=absolute", "--git-path", name], worktree).stdout
    return Path(out.strip())


def markers_left(worktree: Path) -> list[str]:
    """Of the files the merge under way in ``worktree`` stopped at (those
    :func:`start_merge` recorded, and any still unmerged in the index), the ones
    that still hold a conflict marker line (``<<<<<<<`` or ``>>>>>>>``), sorted."""
    try:
        recorded = _git_path(worktree, _CONFLICTS).read_text(encoding="utf-8").split("\0")
    except OSError:
        recorded = []
    left = []
    for path in sorted({p for p in recorded if p} | set(unmerged(worktree))):
        try:
            data = (worktree / path).read_bytes()
        except OSError:  # deleted (or a directory now): no markers in it
            continue
        if any(_is_marker(line) for line in data.splitlines()):
            left.append(path)
    return left


def _is_marker(line: bytes) -> bool:
    for mark in (b"<<<<<<<", b">>>>>>>"):
        if line.startswith(mark) and line[7:8] in (b"", b" ", b"\r"):
            return True
    return False


MARK = "`dispatcher rebase` onto"
"""What the message of every merge :func:`start_merge` begins holds (the caller's)."""


def ours_under_way(worktree: Path) -> bool:
    """Whether a merge :func:`start_merge` began is under way in ``worktree``
    (``MERGE_HEAD`` present, its ``MERGE_MSG`` holding :data:`MARK`): one left for a
    follow-up to resolve, or that a crash left without its follow-up. Asked at every
    job's end: when the worktree's own git dir plainly has no ``MERGE_HEAD``, no git
    is run."""
    dirs = dotgit.git_dirs(worktree)
    if dirs is not None and not (dirs.gitdir / "MERGE_HEAD").exists():
        return False
    try:
        text = _git_path(worktree, "MERGE_MSG").read_text(encoding="utf-8", errors="replace")
    except (GitError, OSError):
        return False
    head = cmd.run(["rev-parse", "--verify", "--quiet", "MERGE_HEAD"], worktree, check=False)
    return head.returncode == 0 and MARK in text


def unmerged(worktree: Path) -> list[str]:
    """The paths with conflicts in ``worktree``'s index, sorted."""
    out = cmd.run(["diff", "--name-only", "--diff-filter=U", "-z"], worktree).stdout
    return sorted({path for path in out.split("\0") if path})


def abort_merge(worktree: Path) -> None:
    """Take back a merge :func:`start_merge` began (no-op when none is under way)."""
    cmd.run(["merge", "--abort"], worktree, check=False)
