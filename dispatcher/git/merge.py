"""The merge engine: a merge computed without a worktree, landed by compare-and-swap.

``merge-tree --write-tree`` and ``commit-tree`` build the result; merges into
one target run one at a time; the target moves by compare-and-swap, and a
checked-out target is updated under its ``index.lock`` with a journal
(:mod:`dispatcher.git.journal`) that :func:`recover_landing` uses after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dispatcher import faults
from dispatcher.errors import (
    DirtyCheckout,
    DispatcherError,
    GitError,
    InvalidInput,
    InvalidState,
    MergeConflict,
    NotFound,
    RefMoved,
)
from dispatcher.git import cmd
from dispatcher.git import journal as merge_journal
from dispatcher.git import remote as git_remote
from dispatcher.git.commits import commit_tree, first_line, status_porcelain
from dispatcher.git.dotgit import git_dirs, head_branch
from dispatcher.git.names import check_rev, identity, is_full_sha, validate_branch_name
from dispatcher.git.refs import branch_head, common_dir, is_ancestor, ref_value, rev_parse
from dispatcher.git.worktrees import checked_out_in, checkouts_of
from dispatcher.process import proc

log = logging.getLogger(__name__)

_STRATEGIES = ("merge", "squash", "rebase", "ff")


@dataclass(frozen=True)
class _MergeCheck:
    """Result of a merge computed without a worktree."""

    clean: bool
    tree: str  # the merged tree (with conflict markers when not clean)
    conflicts: list[str]  # conflicting paths, sorted, when not clean


@dataclass(frozen=True)
class _Commit:
    sha: str
    parent: str
    tree: str
    author_name: str
    author_email: str
    author_date: str  # git's raw format: "<unix time> <+zone>"
    message: str


def _files_summary(files: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _merge_check(repo: Path, ours: str, theirs: str) -> _MergeCheck:
    """Merge ``theirs`` into ``ours`` in memory (``merge-tree --write-tree``); no worktree."""
    result = cmd.answer(
        ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z",
         "--end-of-options", check_rev(ours), check_rev(theirs)],
        repo,
    )  # fmt: skip
    fields = result.stdout.split("\0")
    clean = result.returncode == 0
    conflicts = [] if clean else sorted({f for f in fields[1:] if f})
    return _MergeCheck(clean=clean, tree=fields[0].strip(), conflicts=conflicts)


def conflicting_files(repo: Path, ours: str, theirs: str) -> list[str]:
    """The paths a merge of ``theirs`` into ``ours`` conflicts in ([] when it is clean)."""
    return _merge_check(repo, ours, theirs).conflicts


def _conflict(files: list[str], what: str = "merge conflict") -> MergeConflict:
    return MergeConflict(
        f"{what} in {len(files)} file(s): {_files_summary(files)}", details={"files": files}
    )


# Merges into one target branch run one at a time: each is computed on the tip the
# one before left, and no two update one checkout together.
_TARGET_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_TARGET_LOCKS_GUARD = threading.Lock()


def _target_lock(repo: Path, target: str) -> threading.Lock:
    dirs = git_dirs(repo)
    common = dirs.common if dirs is not None else common_dir(repo)
    key = (os.path.realpath(common), target)
    with _TARGET_LOCKS_GUARD:
        return _TARGET_LOCKS.setdefault(key, threading.Lock())


def merge(
    repo: Path,
    *,
    strategy: str,
    target_branch: str,
    source: str,
    base: str,
    message: str,
    author_name: str,
    author_email: str,
    journal: Path,
    label: str = "",
    hub: Hub | None = None,
) -> str:
    """Land commit ``source`` on ``target_branch``; return the branch's new tip.

    ``strategy`` is ``merge`` (always a merge commit), ``squash`` (one commit),
    ``rebase`` (replay the non-merge commits of ``base..source``) or ``ff``.
    The result is computed without touching any worktree; the branch then
    moves by compare-and-swap, through its checkout if it has one. Nothing
    changes unless everything succeeds: MergeConflict, DirtyCheckout and
    RefMoved leave the branch and every checkout as they were. Already merged
    (``source`` reachable from the target): the target's tip, unchanged.

    Merges into one target run one at a time. Before the branch moves, a
    :mod:`~dispatcher.git.journal` record is written at ``journal`` (named
    ``label``); it is left for the caller to discard once it has recorded the
    merge, and :func:`recover_landing` finishes or undoes it after a crash.

    ``hub``: the repo's shared remote; the merge is then made on the hub's target
    and pushed there (:func:`_merge_by_push`), the local target following it.
    """
    if strategy not in _STRATEGIES:
        raise InvalidInput(
            f"unknown merge strategy {strategy!r}; use one of {', '.join(_STRATEGIES)}"
        )
    ident = identity(author_name, author_email)
    check_rev(base)
    validate_branch_name(target_branch)
    theirs = rev_parse(repo, source)
    with _target_lock(repo, target_branch):
        if hub is not None:
            how = _How(strategy, base, message, ident, label, journal)
            return _merge_by_push(repo, hub, target_branch, theirs, how)
        old = branch_head(repo, target_branch)
        if old is None:
            raise NotFound(f"no such branch: {target_branch!r}")
        new = _merged_commit(repo, strategy, target_branch, old, theirs, base, message, ident)
        if new == old:
            return old
        faults.reach("merge.computed")
        reflog = f"dispatcher {strategy}: {first_line(message) or theirs[:12]}"
        intent = _Intent(label=label, strategy=strategy, source=theirs)
        _land(repo, target_branch, old, new, reflog, journal=journal, landing=intent)
        return new


@dataclass(frozen=True)
class Hub:
    """The shared remote a merge is pushed to (docs/cluster.md), and how."""

    remote: str
    credentials: git_remote.Credentials | None = None
    timeout: float = 300
    tries: int = 5  # fetches-and-pushes before a target that keeps moving is given up


@dataclass(frozen=True)
class _How:
    strategy: str
    base: str
    message: str
    ident: Mapping[str, str]
    label: str
    journal: Path


def _merge_by_push(repo: Path, hub: Hub, target: str, theirs: str, how: _How) -> str:
    """Merge ``theirs`` into the hub's ``target``: fetch it, compute the merge on its
    tip (``merge-tree``, ``commit-tree``), push the result with a lease on that tip; a
    lost lease (someone pushed meanwhile) starts over from the fetch, ``hub.tries``
    times at most. The local target then follows the hub (:func:`_follow_hub`).

    The journal is written before the push: a crash after it is finished at the next
    start by asking the hub (:func:`hub_landed`), so a merge pushed is recorded once
    and one not pushed is left to be made again."""
    ref = f"refs/heads/{target}"
    for _ in range(hub.tries):
        there = git_remote.fetch_branch(
            repo, hub.remote, target, credentials=hub.credentials, timeout=hub.timeout
        )
        if there is None:  # a branch only this clone has yet (a team's): it goes first
            there = branch_head(repo, target)
            if there is None:
                raise NotFound(f"no such branch: {target!r} (here or on the hub {hub.remote})")
            try:
                git_remote.push_ref(
                    repo, hub.remote, ref, there, expect="",
                    credentials=hub.credentials, timeout=hub.timeout,
                )  # fmt: skip
            except git_remote.LeaseLost:
                continue  # someone made it meanwhile: fetch theirs
        new = _merged_commit(
            repo, how.strategy, target, there, theirs, how.base, how.message, how.ident
        )
        intent = _Intent(
            label=how.label, strategy=how.strategy, source=theirs, hub=hub.remote, hub_old=there
        )
        reflog = f"dispatcher {how.strategy}: {first_line(how.message) or theirs[:12]}"
        if new == there:  # already there: the local target follows, nothing is pushed
            _follow_hub(repo, target, there, reflog, how.journal, intent, keep=None)
            return there
        faults.reach("merge.computed")
        record = merge_journal.Landing(
            label=how.label, repo=str(repo), target=target,
            old=branch_head(repo, target) or there, new=new, strategy=how.strategy,
            source=theirs, nonce=secrets.token_hex(8), hub=hub.remote, hub_old=there,
        )  # fmt: skip
        merge_journal.write(how.journal, record)
        try:
            git_remote.push_ref(
                repo, hub.remote, ref, new, expect=there,
                credentials=hub.credentials, timeout=hub.timeout,
            )  # fmt: skip
        except git_remote.LeaseLost:
            merge_journal.discard(how.journal)
            log.info("merge into %s: the hub's %s moved meanwhile; again", target, hub.remote)
            continue
        except DispatcherError as refused:
            # Refused, or cut short (a timeout: did it land?). The hub says; if it cannot
            # be asked, the journal stays for the next start to ask it.
            try:
                now = git_remote.remote_refs(
                    repo, hub.remote, ref, credentials=hub.credentials, timeout=hub.timeout
                ).get(ref)
            except DispatcherError:
                raise refused from None
            if now != new:
                merge_journal.discard(how.journal)
                raise
        faults.reach("merge.hub-pushed")  # the hub has it; the local target does not yet
        _follow_hub(repo, target, new, reflog, how.journal, intent, keep=record)
        return new
    raise RefMoved(
        f"{target} on the hub {hub.remote} kept moving ({hub.tries} tries); nothing was "
        "changed, try again"
    )


def _follow_hub(
    repo: Path,
    target: str,
    tip: str,
    reflog: str,
    journal: Path,
    intent: _Intent,
    *,
    keep: merge_journal.Landing | None,
) -> None:
    """Move the local ``target`` to the hub's ``tip`` (through its checkout, as a merge
    lands: :func:`_land`, its journal at ``journal``) when that loses nothing: it is
    behind ``tip``. Local commits the hub lacks are left (logged); a refusal (a dirty
    checkout) is logged: the merge is on the hub either way. ``keep``: the hub merge's
    journal, which stays at ``journal`` (or ``_land``'s, naming the hub too) until the
    caller, having recorded the merge, discards it."""
    local = branch_head(repo, target)
    try:
        if local == tip:
            return
        if local is not None and not is_ancestor(repo, local, tip):
            log.warning(
                "%s has commits the hub lacks (at %s, the hub at %s): it was left as it is",
                target, local[:12], tip[:12],
            )  # fmt: skip
            return
        if local is None:
            cmd.run(["update-ref", "-m", reflog, "--end-of-options", f"refs/heads/{target}",
                     tip, ""], repo)  # fmt: skip
            return
        _land(repo, target, local, tip, reflog, journal=journal, landing=intent)
    except DispatcherError as exc:
        log.warning("%s left at %s behind the hub's %s: %s", target, (local or "")[:12],
                    tip[:12], exc.message)  # fmt: skip
    finally:
        if keep is not None and not journal.exists():
            merge_journal.write(journal, keep)  # the hub merge is still to be recorded


def hub_landed(landing: merge_journal.Landing, hub: Hub, journal: Path) -> bool:
    """Whether the hub's target holds the merge the journal at ``journal`` names (asked
    now), the local target then following it as a merge does. FetchFailed when the hub
    cannot be asked."""
    repo = Path(landing.repo)
    for sha in (landing.old, landing.new):
        if not is_full_sha(sha):
            raise InvalidInput(f"merge journal names {sha!r}, not a commit id")
    target = validate_branch_name(landing.target)
    tip = git_remote.fetch_branch(
        repo, hub.remote, target, credentials=hub.credentials, timeout=hub.timeout
    )
    if tip is None or not (tip == landing.new or is_ancestor(repo, landing.new, tip)):
        return False
    intent = _Intent(label=landing.label, strategy=landing.strategy, source=landing.source,
                     hub=landing.hub, hub_old=landing.hub_old)  # fmt: skip
    reflog = f"dispatcher {landing.strategy}: finished after a restart"
    _follow_hub(repo, target, tip, reflog, journal, intent, keep=landing)
    return True


def _merged_commit(
    repo: Path,
    strategy: str,
    target: str,
    old: str,
    theirs: str,
    base: str,
    message: str,
    ident: Mapping[str, str],
) -> str:
    """The commit ``target`` (at ``old``) would move to; ``old`` when there is nothing to do."""
    if is_ancestor(repo, theirs, old):
        return old
    if strategy == "ff":
        if not is_ancestor(repo, old, theirs):
            raise MergeConflict(
                f"cannot fast-forward {target}: it has moved since the job's base; "
                "use merge, squash or rebase",
                details={"files": []},
            )
        return theirs
    check = _merge_check(repo, old, theirs)
    if not check.clean:
        raise _conflict(check.conflicts)
    if strategy == "merge":
        return commit_tree(repo, check.tree, [old, theirs], message, ident)
    if strategy == "squash":
        if check.tree == cmd.run(["rev-parse", f"{old}^{{tree}}"], repo).stdout.strip():
            return old  # the changes are already there (squashed before)
        return commit_tree(repo, check.tree, [old], message, ident)
    return _rebase(repo, old, rev_parse(repo, base), theirs, ident)


def _commits_to_replay(repo: Path, base: str, source: str) -> list[_Commit]:
    """Non-merge commits of ``base..source``, oldest first, with what a replay needs."""
    fmt = "%H%x00%P%x00%T%x00%an%x00%ae%x00%ad%x00%B%x00"
    out = cmd.run(
        [
            "rev-list",
            "--reverse",
            "--no-merges",
            "--no-commit-header",
            "--date=raw",
            f"--format={fmt}",
            "--end-of-options",
            f"{base}..{source}",
        ],
        repo,
    ).stdout
    fields = out.split("\0")
    commits = []
    for i in range(0, len(fields) - 6, 7):
        sha, parent, tree, name, email, date, message = fields[i : i + 7]
        commits.append(_Commit(sha.lstrip("\n"), parent, tree, name, email, date, message))
    return commits


def _rebase(repo: Path, old: str, base: str, source: str, ident: Mapping[str, str]) -> str:
    """Replay the non-merge commits of ``base..source`` onto ``old``; the new tip.

    No worktree: each commit c (parent p) is applied to the tip t by merging c
    with a throwaway commit that has t's tree and p as its only parent, so
    that ``merge-tree`` uses p as the merge base (git 2.39 has no
    ``--merge-base``). Authors, dates and messages are kept; the committer is
    ``ident``. As in ``git rebase``, a commit whose parent is already the tip
    is kept as it is, and one that becomes empty is dropped.
    """
    tip = old
    tip_tree = cmd.run(["rev-parse", f"{old}^{{tree}}"], repo).stdout.strip()
    for commit in _commits_to_replay(repo, base, source):
        if not commit.parent:
            raise InvalidInput(f"cannot rebase root commit {commit.sha[:12]}")
        if commit.parent == tip:
            tip, tip_tree = commit.sha, commit.tree
            continue
        onto = commit_tree(repo, tip_tree, [commit.parent], "dispatcher rebase step", ident)
        check = _merge_check(repo, onto, commit.sha)
        if not check.clean:
            subject = first_line(commit.message)
            raise _conflict(
                check.conflicts, f"rebase conflict applying {commit.sha[:12]} {subject}"
            )
        if check.tree == tip_tree:
            continue
        env = {
            **ident,
            "GIT_AUTHOR_NAME": commit.author_name,
            "GIT_AUTHOR_EMAIL": commit.author_email,
            "GIT_AUTHOR_DATE": commit.author_date,
        }
        tip = commit_tree(repo, check.tree, [tip], commit.message, env)
        tip_tree = check.tree
    return tip


def _cas_update(repo: Path, ref: str, new: str, old: str, msg: str) -> None:
    """Move ``ref`` from ``old`` to ``new`` atomically; RefMoved if it is no longer at ``old``."""
    result = cmd.run(
        ["update-ref", "-m", msg or "dispatcher", "--end-of-options", ref, new, old],
        repo,
        check=False,
    )
    if result.returncode == 0:
        return
    current = ref_value(repo, ref)
    if current != old:
        raise RefMoved(
            f"{ref} moved (expected {old[:12]}, found {(current or 'nothing')[:12]}); "
            "nothing was changed, try again"
        )
    raise GitError(cmd.failure(result))


def _land(
    repo: Path,
    target: str,
    old: str,
    new: str,
    msg: str,
    *,
    journal: Path,
    landing: _Intent,
    only_checkout: Path | Literal["any"] | None = "any",
) -> None:
    """Move ``target`` from ``old`` to ``new`` by compare-and-swap, updating its checkout
    if it has one (:func:`_update_checkout`). The journal at ``journal`` says what is
    under way until the caller, having recorded the merge, discards it; it is removed
    here when nothing moved. ``only_checkout``: the one checkout that may be moved (or
    None: none may); a ``target`` checked out anywhere else is refused (InvalidState,
    nothing changed)."""
    moved = RefMoved(f"{target} moved during the merge; nothing was changed, try again")
    ref = f"refs/heads/{target}"
    where = checked_out_in(repo, target) if only_checkout == "any" else None
    if only_checkout != "any":  # every checkout of it (`checkout --ignore-other-worktrees`)
        for info in checkouts_of(repo, target):
            if only_checkout is None or not _same_path(info.path, only_checkout):
                raise InvalidState(
                    f"{target} is checked out in {info.path}, which the daemon does not "
                    "move; check out another branch there and try again (nothing was changed)"
                )
            where = info
    index = _index_file(where.path) if where is not None else None
    record = merge_journal.Landing(
        label=landing.label, repo=str(repo), target=target, old=old, new=new,
        strategy=landing.strategy, source=landing.source, nonce=secrets.token_hex(8),
        worktree=str(where.path) if where is not None else None,
        index=str(index) if index is not None else None, onto=landing.onto,
        hub=landing.hub, hub_old=landing.hub_old,
    )  # fmt: skip
    merge_journal.write(journal, record)
    try:
        if where is None:
            _cas_update(repo, ref, new, old, msg)
        else:
            _update_checkout(repo, where.path, record, msg)
    except RefMoved:
        merge_journal.discard(journal)
        raise moved from None
    except (DirtyCheckout, InvalidState):  # refused before anything was written
        merge_journal.discard(journal)
        raise
    except BaseException:
        # Unexpected (an I/O error): a checkout may hold part of the merge, so the
        # journal stays for the next start to finish or undo; a bare ref either moved
        # (the caller records it) or did not (nothing to do).
        if where is None and ref_value(repo, ref) != new:
            merge_journal.discard(journal)
        raise


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class _Intent:
    """What the journal records about a merge besides the refs."""

    label: str
    strategy: str
    source: str
    onto: str | None = None  # a rebase's target tip, for a restart to record
    hub: str | None = None  # a merge by push: the hub remote, and its target's tip before
    hub_old: str | None = None


def _index_file(worktree: Path) -> Path:
    """The absolute path of ``worktree``'s index file."""
    out = cmd.run(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree).stdout
    return Path(out.strip())


def _head_branch(worktree: Path) -> str | None:
    """The branch ``worktree``'s HEAD names (main checkout or linked), None if detached."""
    head = head_branch(worktree)
    if head is not None:
        return head[1]
    result = cmd.run(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@dataclass(frozen=True)
class _IndexLock:
    """A checkout's ``index.lock``, taken the way git takes it, provably ours.

    We create ``index.lock.dispatcher-<nonce>`` and hard-link it to ``index.lock``
    (atomic; fails when the lock exists). While we hold it the user's own git
    commands that write the index wait or fail instead of racing the merge.
    After a crash the lock is ours exactly when it is the same inode as our file.
    """

    index: Path
    nonce: str

    @property
    def lock(self) -> Path:
        return self.index.with_name(self.index.name + ".lock")

    @property
    def mine(self) -> Path:
        return self.index.with_name(f"{self.index.name}.lock.dispatcher-{self.nonce}")

    def acquire(self, worktree: Path) -> None:
        fd = os.open(self.mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"held by the dispatcher daemon while it merges into this checkout\n")
        finally:
            os.close(fd)
        try:
            os.link(self.mine, self.lock)
        except FileExistsError:
            self.mine.unlink()
            raise InvalidState(
                f"another git command is running in {worktree} (its index.lock exists); "
                "nothing was changed, try again",
                details={"worktree": str(worktree)},
            ) from None

    def owned(self) -> bool:
        try:
            ours, held = os.stat(self.mine), os.stat(self.lock)
        except FileNotFoundError:
            return False
        return (ours.st_dev, ours.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self.owned():
            self.lock.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.mine.unlink()


def _scratch_index(index: Path, nonce: str) -> Path:
    """Where a merge builds the checkout's next index (beside it: renamed into place)."""
    return index.with_name(f"{index.name}.dispatcher-{nonce}")


def _update_checkout(repo: Path, worktree: Path, landing: merge_journal.Landing, msg: str) -> None:
    """Move the checked-out ``landing.target`` and its files from old to new, safely.

    With the checkout's index lock held: HEAD must still be the target at old,
    tracked files clean, and no untracked or ignored file in the way of a path the
    merge adds. ``read-tree -m -u old new`` on a copy of the index updates only the
    files that differ; the ref then moves by compare-and-swap (if it moved meanwhile,
    the files are put back and RefMoved raised); renaming the copy over the index
    installs it. A crash anywhere in between is finished or undone at the next start
    (:func:`recover_landing`).
    """
    assert landing.index is not None
    old, new, target = landing.old, landing.new, landing.target
    index = Path(landing.index)
    lock = _IndexLock(index, landing.nonce)
    lock.acquire(worktree)
    scratch = _scratch_index(index, landing.nonce)
    installed = False
    try:
        changes = _name_status(worktree, old, new)
        _check_checkout(repo, worktree, target, old, changes)
        if index.exists():
            shutil.copyfile(index, scratch)
        env = {"GIT_INDEX_FILE": str(scratch)}
        cmd.run(["update-index", "-q", "--refresh"], worktree, check=False, env_extra=env)
        result = cmd.run(["read-tree", "-m", "-u", old, new], worktree, check=False, env_extra=env)
        if result.returncode != 0:
            _undo_files(worktree, old, new)  # a failure part-way may have written some
            raise _refusal(worktree, target, result)
        faults.reach("merge.files-updated")
        try:
            _cas_update(repo, f"refs/heads/{target}", new, old, msg)
        except BaseException:
            if ref_value(repo, f"refs/heads/{target}") != new:
                _undo_files(worktree, old, new)
            raise
        faults.reach("merge.ref-moved")
        os.replace(scratch, index)
        installed = True
    finally:
        # Landed but the index not installed (an I/O error): keep the lock and the
        # new index, so that nothing runs on a checkout whose index does not match
        # HEAD; the next start installs it from the journal.
        if installed or ref_value(repo, f"refs/heads/{target}") != new:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()
            lock.release()


def _check_checkout(
    repo: Path, worktree: Path, target: str, old: str, changes: list[tuple[str, str]]
) -> None:
    """Refuse (changing nothing) unless ``worktree`` is on ``target`` at ``old``, its
    tracked files are clean and nothing untracked or ignored is in the merge's way."""
    if _head_branch(worktree) != target or branch_head(repo, target) != old:
        raise RefMoved(f"{target} moved during the merge")
    dirty = status_porcelain(worktree, untracked=False)
    if dirty:
        raise DirtyCheckout(
            f"{target} is checked out at {worktree} with uncommitted changes in: "
            f"{_files_summary(dirty)}; commit or stash them first",
            details={"files": dirty, "worktree": str(worktree)},
        )
    in_the_way = _in_the_way(worktree, changes)
    if in_the_way:
        raise _untracked_in_the_way(worktree, target, in_the_way)


def _untracked_in_the_way(worktree: Path, target: str, files: list[str]) -> DirtyCheckout:
    return DirtyCheckout(
        f"{target} is checked out at {worktree} and the merge would overwrite "
        f"untracked or ignored files: {_files_summary(files)}; move or remove them first",
        details={"files": files, "worktree": str(worktree)},
    )


def _name_status(cwd: Path, old: str, new: str) -> list[tuple[str, str]]:
    """(status, path) for each path that differs from ``old`` to ``new``: A(dded),
    D(eleted), M(odified) or T(ype changed); no renames."""
    out = cmd.run(
        ["diff", "--name-status", "-z", "--no-renames", "--no-ext-diff", "--end-of-options",
         check_rev(old), check_rev(new), "--"],
        cwd,
    ).stdout  # fmt: skip
    fields = out.split("\0")
    return [(fields[i][:1], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]


def _in_the_way(worktree: Path, changes: list[tuple[str, str]]) -> list[str]:
    """Paths in ``worktree`` that a merge adding the ``A`` paths would overwrite: a
    file (untracked or ignored) where one is added, a file where a directory must
    be made, a directory holding files that are not tracked. ``git read-tree -u``
    itself overwrites ignored files (git >= 2.34), so this is checked first."""
    deleted = {path for status, path in changes if status == "D"}
    blocked: set[str] = set()
    checked: dict[str, bool] = {}
    for status, path in changes:
        if status != "A":
            continue
        parts = path.split("/")
        for depth in range(1, len(parts)):
            lead = "/".join(parts[:depth])
            if lead not in checked:
                full = worktree / lead
                checked[lead] = (
                    os.path.lexists(full)
                    and (os.path.islink(full) or not os.path.isdir(full))
                    and lead not in deleted
                )
            if checked[lead]:
                blocked.add(lead)
                break
        else:
            if _occupied(worktree / path, path, deleted):
                blocked.add(path)
    return sorted(blocked)


def _occupied(full: Path, rel: str, tracked: set[str]) -> bool:
    """True if something other than tracked files of ``old`` stands at ``full``."""
    if os.path.islink(full) or (os.path.lexists(full) and not os.path.isdir(full)):
        return True
    return os.path.isdir(full) and _holds_untracked(full, rel, tracked)


def _holds_untracked(directory: Path, rel: str, tracked: set[str]) -> bool:
    """True if ``directory`` (``rel`` in the worktree) holds a file not in ``tracked``."""
    for root, dirs, files in os.walk(directory):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            inner = os.path.relpath(os.path.join(root, name), directory)
            if f"{rel}/{inner}" not in tracked:
                return True
    return False


_UNTRACKED = re.compile(r"^error: Untracked working tree file '(.+)' would be", re.M)
_NOT_UPTODATE = re.compile(r"^error: Entry '(.+)' not uptodate", re.M)


def _refusal(worktree: Path, target: str, result: proc.Result) -> DispatcherError:
    """The error for a ``read-tree -m -u`` that refused (the user changed files meanwhile)."""
    untracked = _UNTRACKED.findall(result.stderr) + [
        line.strip() for line in result.stderr.splitlines() if line.startswith("\t")
    ]
    if untracked:
        return _untracked_in_the_way(worktree, target, sorted(set(untracked)))
    dirty = _NOT_UPTODATE.findall(result.stderr)
    if dirty:
        return DirtyCheckout(
            f"{target} is checked out at {worktree} with uncommitted changes in: "
            f"{_files_summary(dirty)}; commit or stash them first",
            details={"files": dirty, "worktree": str(worktree)},
        )
    return GitError(cmd.failure(result))


# --- finishing or undoing a landing cut short -----------------------------------------

# How long recovery waits for a `read-tree` orphaned by a crash to finish writing.
_ORPHAN_WAIT_SECONDS = 60.0


def recover_landing(landing: merge_journal.Landing) -> bool:
    """Finish or undo a merge that a crash cut short; True if its target holds ``new``.

    If the target is at ``new`` the checkout's new index is installed (when our
    scratch index and our index.lock are still there). If it is not (and it is at
    ``old``, or our lock still guards the checkout), the files the merge had
    already written are put back: a path is restored to ``old`` only where it holds
    exactly ``new``'s content; anything else (the user's) is left and logged. Our
    index.lock and scratch files are removed either way.
    """
    repo = Path(landing.repo)
    for sha in (landing.old, landing.new):
        if not is_full_sha(sha):
            raise InvalidInput(f"merge journal names {sha!r}, not a commit id")
    validate_branch_name(landing.target)
    current = ref_value(repo, f"refs/heads/{landing.target}")
    landed = current == landing.new or (
        current is not None and is_ancestor(repo, landing.new, current)
    )
    if landing.worktree is None or landing.index is None:
        return landed
    worktree, index = Path(landing.worktree), Path(landing.index)
    lock = _IndexLock(index, landing.nonce)
    scratch = _scratch_index(index, landing.nonce)
    _wait_for_orphans(scratch, worktree)
    try:
        if current == landing.new:
            if scratch.exists() and lock.owned():
                os.replace(scratch, index)
                log.info("merge into %s at %s finished: index installed", landing.target, worktree)
            elif scratch.exists():
                log.warning(
                    "merge into %s at %s: index.lock is no longer ours; its index was left "
                    "as found (check `git status` there)",
                    landing.target,
                    worktree,
                )
        elif (
            not landed
            and (current == landing.old or lock.owned())
            and worktree.is_dir()
            and _head_branch(worktree) == landing.target
        ):
            left = _undo_files(worktree, landing.old, landing.new)
            log.info("merge into %s at %s undone", landing.target, worktree)
            if left:
                log.warning(
                    "merge into %s at %s undone; left as found (neither before nor after "
                    "the merge): %s",
                    landing.target,
                    worktree,
                    _files_summary(left),
                )
        elif not landed:
            log.warning(
                "merge into %s at %s cut short, but the checkout moved on; its files were "
                "left as found",
                landing.target,
                worktree,
            )
    finally:
        for leftover in (scratch, scratch.with_name(scratch.name + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        lock.release()
    return landed


def _wait_for_orphans(scratch: Path, worktree: Path) -> None:
    """Wait (bounded) for the git commands a killed daemon left running on ``scratch``
    (a ``read-tree`` still writing files, and the filters it runs) to end."""
    deadline = time.monotonic() + _ORPHAN_WAIT_SECONDS
    pids = _processes_using_index(scratch)
    if pids:
        log.info("waiting for git left running by the last daemon in %s (pid %s)", worktree, pids)
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _processes_using_index(scratch)
    if pids:
        log.warning("git still running in %s (pid %s); going on without it", worktree, pids)


def _processes_using_index(index: Path) -> list[int]:
    """Pids whose environment sets ``GIT_INDEX_FILE`` to ``index`` (from /proc)."""
    wanted = b"GIT_INDEX_FILE=" + os.fsencode(index)
    pids = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    environ = fh.read()
            except OSError:  # gone, or not ours to read
                continue
            if wanted in environ.split(b"\0"):
                pids.append(int(entry.name))
    return sorted(pids)


def _undo_files(worktree: Path, old: str, new: str) -> list[str]:
    """Put back the files of ``worktree`` that a merge from ``old`` to ``new`` had
    already written: each path that holds ``new``'s content (or is missing, where
    ``old`` has it) gets ``old``'s (or is removed, where ``old`` has none). Paths
    holding anything else are left alone and returned. The index is not touched."""
    changes = _name_status(worktree, old, new)
    in_new = {path for status, path in changes if status != "D"}
    in_old = {path for status, path in changes if status != "A"}
    with tempfile.TemporaryDirectory(prefix="dispatcher-undo-") as tmp:
        old_index, new_index = Path(tmp) / "old", Path(tmp) / "new"
        as_new = _matching(worktree, new, in_new, new_index)
        as_old = _matching(worktree, old, in_old, old_index)
        remove = sorted(path for path in in_new - in_old if path in as_new)
        restore = sorted(
            path
            for path in in_old
            if (path in in_new and path in as_new) or not os.path.lexists(worktree / path)
        )
        for path in remove:
            with contextlib.suppress(FileNotFoundError):
                (worktree / path).unlink()
            _prune_empty_parents(worktree, path)
        if restore:
            cmd.run(
                ["checkout-index", "-f", "-z", "--stdin"],
                worktree,
                input="\0".join(restore) + "\0",
                env_extra={"GIT_INDEX_FILE": str(old_index)},
            )
    return sorted(
        path
        for path in in_new | in_old
        if path not in as_new
        and path not in as_old
        and os.path.lexists(worktree / path)
        and not (os.path.isdir(worktree / path) and not os.path.islink(worktree / path))
    )


def _matching(worktree: Path, rev: str, paths: set[str], index: Path) -> set[str]:
    """The ``paths`` (files of ``rev``) whose content in ``worktree`` is ``rev``'s.

    Builds ``index`` holding just those entries of ``rev``, refreshes it against the
    files (so git's filters and modes are honoured) and asks ``diff-files``.
    """
    listing = cmd.run(["ls-tree", "-r", "-z", "--full-tree", check_rev(rev)], worktree).stdout
    entries = [
        entry
        for entry in listing.split("\0")
        if entry.partition("\t")[2] in paths and " blob " in entry.partition("\t")[0]
    ]
    env = {"GIT_INDEX_FILE": str(index)}
    cmd.run(["read-tree", "--empty"], worktree, env_extra=env)
    if not entries:
        return set()
    cmd.run(
        ["update-index", "-z", "--index-info"],
        worktree,
        input="\0".join(entries) + "\0",
        env_extra=env,
    )
    cmd.run(["update-index", "-q", "--refresh"], worktree, check=False, env_extra=env)
    differ = cmd.run(["diff-files", "--name-only", "-z"], worktree, env_extra=env).stdout
    kept = {entry.partition("\t")[2] for entry in entries}
    return kept - set(differ.split("\0"))


def _prune_empty_parents(worktree: Path, path: str) -> None:
    """Remove the directories above ``path`` that became empty, up to ``worktree``."""
    parent = (worktree / path).parent
    while parent != worktree and worktree in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent
