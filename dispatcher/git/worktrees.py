"""The worktree lifecycle: add, lock, check, recycle, move and remove linked worktrees.

Git's own worktree commands on one repository run one at a time (they race
inside git otherwise); checkouts run in parallel outside that lock.

Finding one worktree (to remove, lock or unlock it) and the worktree a branch is
checked out in read git's own records (the tree's ``.git`` file, ``.git/worktrees/<id>/``)
through :mod:`dispatcher.git.dotgit` when they say plainly, so they cost the same at
3 worktrees as at 300; anything unusual (a tree moved or removed by hand, a record
repointed or half pruned, a symbolic branch) asks ``git worktree list``, as before.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dispatcher.errors import (
    AlreadyExists,
    GitError,
    InvalidInput,
    InvalidState,
    NotFound,
    RefMoved,
)
from dispatcher.git import cmd, dotgit
from dispatcher.git.names import check_rev, is_full_sha, validate_branch_name
from dispatcher.git.refs import branch_head, common_dir, rev_parse
from dispatcher.paths import inside_repo

_ZERO_OID = "0" * 40
# Parallel checkout (one worker per core) halves a big checkout on slow disks
# (PERF.md), but on a small tree its worker processes double the CPU cost
# (100 files: 31 ms -> 66 ms, measured by bench/throughput.py's profile); git
# checks out serially below the threshold.
_PARALLEL_CHECKOUT = ("-c", "checkout.workers=0", "-c", "checkout.thresholdForParallelism=1000")


# Concurrent worktree commands on one repository race inside git (a `worktree
# list` reading a half-made `.git/worktrees/<id>` fails with "failed to read
# commondir"), so the daemon's own ones run one at a time per repository.
_ADMIN_LOCKS: dict[str, threading.RLock] = {}
_ADMIN_LOCKS_GUARD = threading.Lock()
_F = TypeVar("_F", bound=Callable[..., Any])


def _admin_lock(repo: Path) -> threading.RLock:
    """The lock of ``repo``'s worktree records (one per repository, re-entrant)."""
    key = os.path.realpath(repo)
    with _ADMIN_LOCKS_GUARD:
        return _ADMIN_LOCKS.setdefault(key, threading.RLock())


def _serialized(fn: _F) -> _F:
    """Run ``fn(repo, ...)`` holding the lock of ``repo``'s worktree records."""

    @functools.wraps(fn)
    def wrapper(repo: Path, *args: Any, **kwargs: Any) -> Any:
        with _admin_lock(repo):
            return fn(repo, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of ``git worktree list``."""

    path: Path
    head: str | None  # None for a bare repo or an unborn branch
    branch: str | None  # short name, e.g. "main"; None if detached
    locked: bool
    prunable: bool
    bare: bool


@_serialized
def entries(repo: Path) -> list[WorktreeInfo]:
    """Every worktree of ``repo``, the main one first (``git worktree list --porcelain -z``)."""
    out = cmd.run(["worktree", "list", "--porcelain", "-z"], repo).stdout
    infos = []
    for block in out.split("\0\0"):
        attrs: dict[str, str] = {}
        for line in block.split("\0"):
            if line:
                key, _, value = line.partition(" ")
                attrs[key] = value
        if "worktree" not in attrs:
            continue
        head = attrs.get("HEAD")
        branch = attrs.get("branch")
        infos.append(
            WorktreeInfo(
                path=Path(attrs["worktree"]),
                head=None if head in (None, _ZERO_OID) else head,
                branch=branch.removeprefix("refs/heads/") if branch else None,
                locked="locked" in attrs,
                prunable="prunable" in attrs,
                bare="bare" in attrs,
            )
        )
    return infos


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class _Found:
    """What a lookup of one worktree tells: the main checkout or not, locked or not,
    and git's admin dir of it when the files named it (None: found in the list)."""

    main: bool
    locked: bool
    admin: Path | None


def _main_git_dir(repo: Path) -> Path | None:
    """``<repo>/.git`` when ``repo`` is a main checkout with a plain ``.git`` directory
    (the files can be read directly); None otherwise: ask git."""
    dot = repo / ".git"
    return dot if dot.is_dir() and not dot.is_symlink() else None


def _find_worktree(repo: Path, path: Path) -> _Found | None:
    """git's record of the worktree at ``path``, or None if git has none.

    Read from git's files, whatever the number of worktrees, when they say so plainly
    (:func:`dotgit.record_of`: the tree's ``.git`` file and its admin dir's ``gitdir``
    file name each other); otherwise (a main checkout, a tree moved or removed by hand,
    a record repointed) from ``git worktree list``, as before. 25 ms -> 0.1 ms at 300
    worktrees (bench/repos_api.py).
    """
    common = _main_git_dir(repo)
    record = dotgit.record_of(path, common) if common is not None else None
    if record is not None:
        return _Found(main=False, locked=record.locked, admin=record.admin)
    for index, info in enumerate(entries(repo)):
        if _same_path(info.path, path):
            return _Found(main=index == 0, locked=info.locked, admin=None)
    return None


def _still_recorded(repo: Path, path: Path, found: _Found) -> bool:
    """True if git still has the record ``found`` of ``path`` (after a removal)."""
    if found.admin is not None:
        record = dotgit.record_at(found.admin)
        return record is not None and _same_path(record.path, path)
    return _find_worktree(repo, path) is not None


def checked_out_in(repo: Path, branch: str) -> WorktreeInfo | None:
    """The worktree (main checkout or linked) that has ``branch`` checked out, if any.

    A prunable entry (its directory is gone, and it is not locked) does not count.
    Read from the records' ``HEAD`` files (no git process) when they say plainly
    (:func:`dotgit.branch_holders`), else from ``git worktree list``.
    """
    validate_branch_name(branch)
    common = _main_git_dir(repo)
    if common is not None:
        with _admin_lock(repo):  # never a record half made by this daemon
            holders = dotgit.branch_holders(common, branch)
        if holders is not None:
            return _holding(repo, common, branch, holders)
    found = checkouts_of(repo, branch)
    return found[0] if found else None


def checkouts_of(repo: Path, branch: str) -> list[WorktreeInfo]:
    """Every worktree (main checkout or linked) that has ``branch`` checked out, from
    ``git worktree list`` (more than one: ``checkout --ignore-other-worktrees``); a
    prunable entry does not count."""
    return [
        info
        for info in entries(repo)
        if info.branch == branch and not info.bare and not info.prunable
    ]


def _holding(repo: Path, common: Path, branch: str, holders: list[Path]) -> WorktreeInfo | None:
    """The first of ``holders`` (HEAD dirs naming ``branch``) that ``git worktree list``
    shows and does not call prunable, as its entry."""
    for head_dir in holders:
        if head_dir == common:
            path, locked = Path(os.path.realpath(repo)), False
        else:
            record = dotgit.record_at(head_dir)
            if record is None:
                continue  # no gitdir file: git lists no such worktree
            if not record.locked and not (record.path / ".git").exists():
                continue  # prunable: its directory is gone
            path, locked = record.path, record.locked
        return WorktreeInfo(path, branch_head(repo, branch), branch, locked, False, False)
    return None


def add(
    repo: Path,
    path: Path,
    branch: str,
    base: str,
    *,
    lock_reason: str | None = None,
    sparse: Sequence[str] = (),
) -> None:
    """Create worktree ``path`` on a new ``branch`` starting at ``base``, locked
    (``git worktree lock``) with ``lock_reason`` when given, in the same command.

    ``sparse``: check out only these directories (and the files at the top level),
    git's cone-mode sparse checkout. Git turns on ``extensions.worktreeConfig`` in
    the repository for it, so the setting stays in this worktree alone.

    ``path`` must not exist or be an empty directory. On any failure nothing is
    left behind: no directory, no worktree entry, no branch.
    """
    validate_branch_name(branch)
    for item in sparse:
        inside_repo(item)
    # A full sha was resolved by the caller; if its commit is missing, `add` says so.
    sha = base if is_full_sha(base) else rev_parse(repo, base)
    path = Path(os.path.abspath(path))
    existed = path.exists()
    if existed and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInput(f"worktree path exists and is not empty: {path}")
    if branch_head(repo, branch) is not None:
        raise AlreadyExists(f"branch already exists: {branch!r}")
    locking = ["--lock", "--reason", lock_reason] if lock_reason is not None else []
    _add_then_checkout(
        repo, path, ["-b", branch, *locking], sha, branch, keep_dir=existed, sparse=sparse
    )


def add_detached(repo: Path, path: Path, rev: str) -> str:
    """Create worktree ``path`` with a detached HEAD at ``rev``; returns the commit sha.

    For short-lived checkouts (trigger checks). Leaves nothing behind on failure.
    """
    sha = rev_parse(repo, rev)
    path = Path(os.path.abspath(path))
    if path.exists():
        raise InvalidInput(f"worktree path exists: {path}")
    _add_then_checkout(repo, path, ["--detach"], sha, None, keep_dir=False)
    return sha


def _add_then_checkout(
    repo: Path,
    path: Path,
    options: list[str],
    sha: str,
    branch: str | None,
    *,
    keep_dir: bool,
    sparse: Sequence[str] = (),
) -> None:
    """``git worktree add`` in two steps, so that checkouts in one repository run in
    parallel: the worktree record with ``--no-checkout`` (about 5 ms) under the
    repository's worktree lock, then ``checkout -f`` inside the new tree (the files:
    most of the time) without it. Concurrent adds on 2 cores: 24 ms -> 11 ms a tree.
    The ``post-checkout`` hook runs in the second step, as it would in a plain add.
    """
    try:
        with _admin_lock(repo):
            cmd.run(
                ["worktree", "add", "-q", "--no-checkout", *options,
                 "--end-of-options", str(path), sha],
                repo,
            )  # fmt: skip
        if sparse:  # paths on stdin: never in an option position
            cmd.run(["sparse-checkout", "set", "--cone", "--stdin"], path, input="\n".join(sparse))
        cmd.run([*_PARALLEL_CHECKOUT, "checkout", "-f", "-q"], path)
    except BaseException:
        with _admin_lock(repo):
            _undo_add(repo, path, branch, sha, keep_dir=keep_dir)
        raise


def _undo_add(repo: Path, path: Path, branch: str | None, sha: str, *, keep_dir: bool) -> None:
    """Best-effort cleanup of a failed :func:`add`."""
    with contextlib.suppress(Exception):
        # Works on a half-made entry too: locked ("initializing") or with no directory.
        cmd.run(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
    with contextlib.suppress(OSError):
        _rmtree(path)
        if keep_dir:
            path.mkdir(exist_ok=True)
    with contextlib.suppress(Exception):
        cmd.run(["worktree", "prune"], repo, check=False)
        if branch is not None and branch_head(repo, branch) == sha:
            cmd.run(["update-ref", "-d", f"refs/heads/{branch}", sha], repo, check=False)


def _rmtree(path: Path) -> None:
    """``rm -rf path``, read-only directories included (tools such as Go make them)."""

    def make_writable_and_retry(func: Callable[..., object], name: str, exc: BaseException) -> None:
        if func not in (os.rmdir, os.unlink) or not isinstance(exc, PermissionError):
            raise exc
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(name)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=lambda f, n, e: make_writable_and_retry(f, n, e[1]))


@_serialized
def remove(repo: Path, path: Path) -> None:
    """Remove the linked worktree at ``path``, dirty or locked; a no-op when already gone.

    The directory is deleted only if git knows it as a linked worktree of
    ``repo`` or it still holds a ``.git`` file (a leftover linked worktree):
    an arbitrary directory is never deleted. The main worktree is refused.
    """
    path = Path(os.path.abspath(path))
    found = _find_worktree(repo, path)
    if found is not None and found.main:
        raise InvalidInput(f"refusing to remove the main worktree: {path}")
    if found is not None:
        cmd.run(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
    if (found is not None or _is_leftover_worktree(repo, path)) and path.exists():
        _rmtree(path)
    if found is not None and found.locked and _still_recorded(repo, path, found):
        cmd.run(["worktree", "unlock", str(path)], repo, check=False)
    prune(repo)


def _is_leftover_worktree(repo: Path, path: Path) -> bool:
    """True if ``path`` has a ``.git`` file pointing into ``repo``'s worktree records."""
    dirs = dotgit.git_dirs(path)
    if dirs is None or (path / ".git").is_dir():
        return False
    records = os.path.realpath(common_dir(repo) / "worktrees")
    return os.path.realpath(dirs.gitdir).startswith(records + os.sep)


@_serialized
def lock(repo: Path, path: Path, reason: str, *, new: bool = False) -> None:
    """Lock the worktree at ``path`` so that prune never removes it; no-op if locked.

    Done as ``git worktree lock`` does it (git 2.39's ``lock_worktree``: the file
    ``<admin dir>/locked`` holding the reason and a newline) when git's files name the
    record plainly (:func:`dotgit.record_of`): no git process on the spawn path. Else
    ``git worktree lock`` itself. ``new=True``: the caller just made (or moved) it
    unlocked, so git's list need not be asked first.
    """
    path = Path(os.path.abspath(path))
    common = _main_git_dir(repo)
    record = dotgit.record_of(path, common) if common is not None else None
    if record is not None:
        if not record.locked:
            _write_admin_file(record.admin, "locked", reason + "\n" if reason else "")
        return
    if not new:
        found = _find_worktree(repo, path)
        if found is None:
            raise NotFound(f"not a worktree of {repo}: {path}")
        if found.locked:
            return
    cmd.run(["worktree", "lock", "--reason", reason, "--end-of-options", str(path)], repo)


def _write_admin_file(admin: Path, name: str, text: str) -> None:
    """Write ``<admin>/<name>`` whole or not at all (a temporary file renamed over it;
    git itself truncates and writes in place). Mode 0666 less the umask, as git's."""
    tmp = admin / f"{name}.dispatcher-{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, admin / name)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@_serialized
def unlock(repo: Path, path: Path) -> None:
    """Unlock the worktree at ``path``; no-op if it is not locked or not registered."""
    found = _find_worktree(repo, path)
    if found is not None and found.locked:
        cmd.run(["worktree", "unlock", "--end-of-options", str(path)], repo)


@_serialized
def prune(repo: Path) -> None:
    """Drop git's records of worktrees whose directories are gone (unless locked)."""
    cmd.run(["worktree", "prune"], repo)


def create_branch(repo: Path, branch: str, sha: str) -> None:
    """Make ``branch`` at commit ``sha``; a no-op if it is there already at ``sha``.

    RefMoved if it exists at another commit (nothing is changed).
    """
    validate_branch_name(branch)
    ref = f"refs/heads/{branch}"
    zero = "0" * len(check_rev(sha))
    result = cmd.run(
        ["update-ref", "-m", "dispatcher: created", "--end-of-options", ref, sha, zero],
        repo, check=False,
    )  # fmt: skip
    if result.returncode == 0:
        return
    current = branch_head(repo, branch)
    if current == sha:
        return
    if current is not None:
        raise RefMoved(f"branch {branch!r} exists already at {current[:12]}; left as it is")
    raise GitError(cmd.failure(result))


def delete_branch(repo: Path, branch: str, expected: str | None = None) -> None:
    """Delete ``branch`` (only if it is at ``expected`` when given); no-op if missing.

    Raises InvalidState if the branch is checked out in any worktree and
    RefMoved if it is not at ``expected``.
    """
    validate_branch_name(branch)
    where = checked_out_in(repo, branch)
    if where is not None:
        raise InvalidState(f"branch {branch!r} is checked out at {where.path}; not deleted")
    args = ["update-ref", "-d", "--end-of-options", f"refs/heads/{branch}"]
    if expected is not None:
        args.append(check_rev(expected))
    result = cmd.run(args, repo, check=False)
    if result.returncode == 0:
        return
    current = branch_head(repo, branch)
    if current is None:
        return
    if expected is not None:
        raise RefMoved(f"branch {branch!r} is at {current[:12]}, not {expected[:12]}; not deleted")
    raise GitError(cmd.failure(result))


def is_valid(worktree: Path, repo: Path | None = None) -> bool:
    """True if ``worktree`` is a healthy linked worktree (of ``repo``, when given).

    Its ``.git`` must be a ``gitdir:`` file naming an existing directory whose
    ``gitdir`` file points back at this worktree, and git must accept the
    worktree as the top of its own checkout. A missing or garbled ``.git``
    file, a pruned or reused record, or a main checkout (``.git`` directory)
    all answer False. Never raises for a broken worktree.
    """
    worktree = Path(os.path.abspath(worktree))
    dot_git = worktree / ".git"
    try:
        if not dot_git.is_file() or dot_git.is_symlink():
            return False
        text = dot_git.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not text.startswith("gitdir:"):
        return False
    gitdir = worktree / text.removeprefix("gitdir:").strip()  # absolute or relative
    try:
        back = (gitdir / "gitdir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    if not _same_path(gitdir / back, dot_git):
        return False
    try:
        result = cmd.run(
            ["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir"],
            worktree,
            check=False,
        )
    except (GitError, NotFound):
        return False
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2 or not _same_path(Path(lines[0]), worktree):
        return False
    if repo is None:
        return True
    try:
        return _same_path(Path(lines[1]), common_dir(repo))
    except (InvalidInput, NotFound):
        return False


@_serialized
def move(repo: Path, src: Path, dst: Path) -> None:
    """``git worktree move``: rename a linked worktree (locked or not); ``dst`` must not exist.

    Done as git 2.39's ``move_worktree`` does it with ``--force --force`` (rename the
    directory, then point the record's ``gitdir`` file at ``<dst>/.git``) when git's
    files name the record plainly and the tree cannot hold a submodule, which git
    refuses to move (:func:`_may_hold_submodules`); else ``git worktree move`` itself.
    """
    src, dst = Path(os.path.abspath(src)), Path(os.path.abspath(dst))
    if dst.exists():
        raise InvalidInput(f"worktree destination exists: {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    common = _main_git_dir(repo)
    record = dotgit.record_of(src, common) if common is not None else None
    if record is not None and _absolute_link(src) and not _may_hold_submodules(record.admin):
        try:
            os.rename(record.path, dst)  # the tree itself, as git's (not a symlink to it)
        except OSError:
            pass  # another file system, say: git's move says what is wrong
        else:
            try:
                real = os.path.realpath(dst)
                _write_admin_file(record.admin, "gitdir", f"{real}/.git\n")
            except BaseException:
                os.rename(dst, record.path)
                raise
            return
    cmd.run(
        ["worktree", "move", "--force", "--force", "--end-of-options", str(src), str(dst)],
        repo,
    )


def _absolute_link(worktree: Path) -> bool:
    """True if the worktree's ``.git`` file names its admin dir by an absolute path (one
    that a rename of the worktree leaves right; git 2.48's relative links do not)."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return text.startswith("gitdir:") and os.path.isabs(text.removeprefix("gitdir:").strip())


# A gitlink's mode (0o160000) as it stands, big-endian, in an index entry.
_GITLINK_MODE = (0o160000).to_bytes(4, "big")


def _may_hold_submodules(admin: Path) -> bool:
    """True unless git's files show that the worktree of ``admin`` holds no submodule:
    no ``modules`` directory, no split index, and an index in which no entry can have a
    gitlink's mode (the bytes of that mode appear nowhere in it; a chance match in a
    name or an id only sends the caller to git)."""
    try:
        if (admin / "modules").exists() or any(admin.glob("sharedindex.*")):
            return True
        return _GITLINK_MODE in (admin / "index").read_bytes()
    except FileNotFoundError:
        return False  # no index: nothing is checked out
    except OSError:
        return True


def _clean_args(keep: Sequence[str]) -> list[str]:
    args = ["clean", "-ffdxq"]  # -ff: nested repositories too; -x: ignored files too
    for name in keep:
        inside_repo(name)
        args += ["-e", f"/{name.strip('/')}/"]  # anchored: only that top-level directory
    return args


def recycle(worktree: Path, branch: str, base: str, *, keep: Sequence[str] = ()) -> None:
    """Turn a used worktree into a fresh checkout of ``base`` on the new ``branch``.

    ``checkout -f -B`` resets index and tracked files to ``base`` and ``clean -ffdx``
    removes every untracked and ignored file, except the top-level directories
    named in ``keep`` (dependency installs worth reusing: node_modules, .venv).
    Costs only what differs between the old and the new commit.
    """
    switch_clean(worktree, branch, base)
    cmd.run(_clean_args(keep), worktree)


def switch_clean(worktree: Path, branch: str, base: str) -> None:
    """Move a *clean* worktree (nothing untracked, nothing ignored, no edit: just reset,
    see :mod:`dispatcher.git.untouched`) to ``base`` on the new ``branch``: ``checkout -f
    -b``, which writes only the files that differ; no ``clean`` is needed."""
    validate_branch_name(branch)
    # One git process: a full sha needs no rev-parse, and `checkout -b` itself refuses a
    # branch that exists (never resets one).
    sha = base if is_full_sha(base) else rev_parse(worktree, base)
    result = cmd.run(["checkout", "-q", "-f", "-b", branch, sha, "--"], worktree, check=False)
    if result.returncode != 0:
        if branch_head(worktree, branch) is not None:
            raise AlreadyExists(f"branch already exists: {branch!r}")
        raise GitError(cmd.failure(result))


def start_branch(worktree: Path, branch: str, sha: str) -> None:
    """Put a clean worktree already at commit ``sha`` on the new ``branch`` there: no
    checkout, no clean. One git process creates the branch (``update-ref`` with an empty
    old value: refused if it exists; its reflog written as ``checkout -b`` writes it);
    HEAD is then written as git writes it (``HEAD.lock``, renamed over ``HEAD``)."""
    validate_branch_name(branch)
    if not is_full_sha(sha):
        raise InvalidInput(f"not a full commit sha: {sha!r}")
    ref = f"refs/heads/{branch}"
    result = cmd.run(
        ["update-ref", "-m", f"branch: Created from {sha}", "--end-of-options", ref, sha, ""],
        worktree,
        check=False,
    )
    if result.returncode != 0:
        if branch_head(worktree, branch) is not None:
            raise AlreadyExists(f"branch already exists: {branch!r}")
        raise GitError(cmd.failure(result))
    dirs = dotgit.git_dirs(worktree)
    if dirs is None:
        cmd.run(["symbolic-ref", "HEAD", ref], worktree)
        return
    lock = dirs.gitdir / "HEAD.lock"
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # git's lock: exclusive
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"ref: {ref}\n")
        os.replace(lock, dirs.gitdir / "HEAD")
    except BaseException:
        with contextlib.suppress(OSError):
            lock.unlink()
        raise


def detach_head(worktree: Path) -> None:
    """Detach the worktree's HEAD where it is (writes HEAD only: instant), freeing its branch."""
    sha = cmd.run(["rev-parse", "--verify", "HEAD^{commit}"], worktree).stdout.strip()
    cmd.run(["update-ref", "--no-deref", "-m", "dispatcher: released", "HEAD", sha], worktree)


def reset_detached(worktree: Path, rev: str, *, keep: Sequence[str] = ()) -> str:
    """Detach ``worktree`` at ``rev`` and remove every file not in that commit (but
    ``keep``); returns the commit's sha."""
    sha = rev_parse(worktree, rev)
    cmd.run(["checkout", "-q", "-f", "--detach", sha, "--"], worktree)
    cmd.run(_clean_args(keep), worktree)
    return sha


def is_sparse(worktree: Path) -> bool:
    """True if ``worktree`` has a sparse checkout (``git sparse-checkout set`` was run in it)."""
    dirs = dotgit.git_dirs(worktree)
    return dirs is not None and (dirs.gitdir / "info" / "sparse-checkout").is_file()


def current_branch(worktree: Path) -> str | None:
    """The branch checked out in ``worktree``, or None when its HEAD is detached.

    One git process whatever the number of worktrees (unlike ``worktree list``).
    Raises :class:`GitError` when ``worktree`` is not a working linked worktree.
    """
    if not (worktree / ".git").is_file():
        raise InvalidInput(f"not a linked worktree (no .git file): {worktree}")
    head = dotgit.head_branch(worktree)
    if head is not None:
        return head[1]
    result = cmd.answer(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree)
    return result.stdout.strip() if result.returncode == 0 else None


def delete_unlocked(repo: Path, path: Path) -> None:
    """Remove an unlocked, unneeded linked worktree without holding the repository's
    worktree lock while its files are deleted (that can take seconds): delete the
    directory first, then let a quick ``git worktree prune`` drop the record."""
    path = Path(os.path.abspath(path))
    if path.exists() and _is_leftover_worktree(repo, path):
        _rmtree(path)
    prune(repo)
