"""The only module that runs git: worktrees, refs, merge-tree, commits.

Every call goes through :func:`_git`, which runs ``git`` via
:func:`dispatcher.process.proc.run` in an environment cleaned of inherited ``GIT_*``
variables (:func:`clean_env`) and turns a failure into
:class:`~dispatcher.errors.GitError` showing command, exit code and stderr.

Untrusted names never reach an option position: branch names are checked
with ``git check-ref-format --branch`` and revisions may not start with ``-``;
positional arguments follow ``--end-of-options``.

Merges are computed without touching any worktree (``merge-tree
--write-tree`` + ``commit-tree``) and land by compare-and-swap, one at a time
per target; a checked-out target is updated under its ``index.lock`` with a
journal (:mod:`dispatcher.merge_journal`) that :func:`recover_landing` uses
after a crash. Nothing here knows about jobs or the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dispatcher import faults, gitrefs, merge_journal
from dispatcher.errors import (
    AlreadyExists,
    DirtyCheckout,
    DispatcherError,
    GitError,
    InvalidInput,
    InvalidState,
    MergeConflict,
    NotFound,
    ProcessError,
    RefMoved,
)
from dispatcher.process import proc

log = logging.getLogger(__name__)

_ZERO_OID = "0" * 40
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_STRATEGIES = ("merge", "squash", "rebase", "ff")
# Parallel checkout (one worker per core) halves a big checkout on slow disks
# (PERF.md), but on a small tree its worker processes double the CPU cost
# (100 files: 31 ms -> 66 ms, measured by bench/throughput.py's profile); git
# checks out serially below the threshold.
_PARALLEL_CHECKOUT = ("-c", "checkout.workers=0", "-c", "checkout.thresholdForParallelism=1000")

# Inherited GIT_* variables that configure how git reaches the outside world or
# who commits; everything else (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, ...)
# would point our commands at the wrong repository. Mirrors pre-commit.
_KEEP_ENV = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_ASKPASS",
        "GIT_ALLOW_PROTOCOL",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
    }
)
_KEEP_ENV_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")


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


@dataclass(frozen=True)
class DiffStat:
    """Size of a change: counts and the changed paths (new name for renames)."""

    files: int
    insertions: int
    deletions: int
    paths: list[str]


@dataclass(frozen=True)
class MergeCheck:
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


# --- plumbing -----------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without inherited ``GIT_*`` variables (bar a whitelist), plus ``extra``.

    Git never prompts for credentials (``GIT_TERMINAL_PROMPT=0``). Used for every
    git call and by the runner to build an agent's environment.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in _KEEP_ENV or key.startswith(_KEEP_ENV_PREFIXES)
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


_pinned_global: dict[str, str] = {}


def global_config_files(env: Mapping[str, str]) -> list[Path]:
    """The global (per-user) config files git reads with ``env``, existing or not."""
    if env.get("GIT_CONFIG_GLOBAL"):
        return [Path(env["GIT_CONFIG_GLOBAL"])]
    home = env.get("HOME")
    xdg = env.get("XDG_CONFIG_HOME") or (str(Path(home) / ".config") if home else "")
    return [
        *([Path(xdg) / "git" / "config"] if xdg else []),
        *([Path(home) / ".gitconfig"] if home else []),
    ]


def pin_global_config(env: Mapping[str, str] | None = None) -> str | None:
    """Fix, once at daemon start, which global config the daemon's own git reads.

    Agents may write their HOME. The sandbox keeps the user's existing global git
    config read-only, but a file that does not exist yet could be created by an
    agent with, say, ``core.fsmonitor`` set, and the daemon's next git command in
    a worktree would run it outside the box. So when exactly one global config
    exists, every daemon git call reads that one (``GIT_CONFIG_GLOBAL``); when none
    does, none (``/dev/null``); with both, both stay (both exist and are protected).
    A global config created later is read by the daemon after its next start.
    Returns the pinned path (None: nothing pinned)."""
    env = os.environ if env is None else env
    files = global_config_files(env)
    existing = [path for path in files if path.is_file()]
    _pinned_global.clear()
    if len(existing) == len(files) and len(files) > 1:
        return None
    pinned = str(existing[0]) if existing else os.devnull
    _pinned_global["GIT_CONFIG_GLOBAL"] = pinned
    return pinned


def _git(
    args: Sequence[str],
    cwd: str | os.PathLike[str],
    *,
    check: bool = True,
    input: str | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> proc.Result:
    """Run ``git *args`` in ``cwd``; raise :class:`GitError` on failure when ``check``."""
    if not os.path.isdir(cwd):
        raise NotFound(f"no such directory: {os.fspath(cwd)}")
    argv = ["git", *args]
    try:
        env = clean_env({**_pinned_global, **(env_extra or {})})
        result = proc.run(argv, cwd=cwd, env=env, input=input, check=False)
    except ProcessError as exc:
        raise GitError(exc.message) from exc
    if check and result.returncode != 0:
        raise GitError(_failure(result))
    return result


def _failure(result: proc.Result) -> str:
    return proc.describe_failure(result.argv, result.returncode, result.stdout, result.stderr)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _check_rev(rev: str) -> str:
    """Refuse a revision that is empty, looks like an option or holds control characters."""
    if not rev:
        raise InvalidInput("revision is empty")
    if rev.startswith("-"):
        raise InvalidInput(f"invalid revision {rev!r}: must not start with '-'")
    if _has_control(rev):
        raise InvalidInput(f"invalid revision {rev!r}: contains control characters")
    return rev


def _identity(name: str, email: str) -> dict[str, str]:
    """Environment that makes ``name <email>`` both author and committer."""
    for value in (name, email):
        if not value.strip() or _has_control(value):
            raise InvalidInput(f"invalid git identity: {name!r} <{email}>")
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def _files_summary(files: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


# --- repositories and names ---------------------------------------------------


def toplevel(path: Path) -> Path:
    """Absolute top of the work tree containing ``path`` (a directory or a file in it).

    Raises InvalidInput when ``path`` is missing, not in a git work tree, or in a bare repo.
    """
    path = Path(os.path.abspath(path))
    where = path if path.is_dir() else path.parent
    if not path.exists() or not where.is_dir():
        raise InvalidInput(f"not a git repository: {path}")
    result = _git(["rev-parse", "--show-toplevel"], where, check=False)
    top = result.stdout.strip()
    if result.returncode != 0 or not top:
        raise InvalidInput(f"not a git repository: {path}")
    return Path(top)


def common_dir(repo: Path) -> Path:
    """Absolute path of the repository's common git dir (shared by all its worktrees)."""
    result = _git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo, check=False)
    if result.returncode != 0:
        raise InvalidInput(f"not a git repository: {repo}")
    return Path(result.stdout.strip())


def default_branch(repo: Path) -> str:
    """The branch HEAD points to (even unborn); if detached, "main" or else "master" if present."""
    result = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], repo, check=False)
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    if result.returncode not in (0, 1):
        raise GitError(_failure(result))
    found = _git(
        ["for-each-ref", "--format=%(refname:short)", "refs/heads/main", "refs/heads/master"], repo
    ).stdout.split()
    for name in ("main", "master"):
        if name in found:
            return name
    raise InvalidInput(f"HEAD is detached in {repo} and there is no main or master branch")


# Names made only of these characters, with no empty component, pass every rule
# of git-check-ref-format(1) (no "..", no leading "." or "-", no ".lock" end, no
# "@{", no control or special characters): no git process is needed to know.
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*")


@functools.lru_cache(maxsize=4096)
def _git_accepts_branch(name: str) -> bool:
    if _PLAIN_BRANCH.fullmatch(name) and name != "HEAD":
        return True
    # check-ref-format works outside a repository; "/" keeps any repo config out.
    return _git(["check-ref-format", "--branch", name], "/", check=False).returncode == 0


def validate_branch_name(name: str) -> str:
    """Return ``name`` if it is a safe, valid branch name; else raise InvalidInput."""
    if not name:
        raise InvalidInput("branch name is empty")
    if name.startswith("-"):
        raise InvalidInput(f"invalid branch name {name!r}: must not start with '-'")
    if _has_control(name):
        raise InvalidInput(f"invalid branch name {name!r}: contains control characters")
    if name in ("@", "HEAD") or "@{" in name:
        raise InvalidInput(f"invalid branch name {name!r}: reserved by git")
    if not _git_accepts_branch(name):
        raise InvalidInput(f"invalid branch name {name!r}: rejected by git check-ref-format")
    return name


# --- revisions -----------------------------------------------------------------


def is_full_sha(rev: str) -> bool:
    """True if ``rev`` is a whole object name (40 hex digits): it names one commit forever."""
    return _FULL_SHA.fullmatch(rev) is not None


def rev_parse(repo: Path, rev: str) -> str:
    """Full sha of the commit ``rev`` names; NotFound if there is none."""
    _check_rev(rev)
    # Most bases are a branch: read it from the files, no process.
    if _PLAIN_BRANCH.fullmatch(rev) and not _FULL_SHA.fullmatch(rev):
        known, sha = gitrefs.resolve_branch_name(repo, rev)
        if known and sha is not None:
            return sha
    result = _git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        repo,
        check=False,
    )
    if result.returncode != 0:
        raise NotFound(f"no such commit or ref: {rev!r}")
    return result.stdout.strip()


def branch_head(repo: Path, branch: str) -> str | None:
    """Sha of ``refs/heads/<branch>``, or None if the branch does not exist."""
    validate_branch_name(branch)
    return _ref_value(repo, f"refs/heads/{branch}")


def is_branch(repo: Path, name: str) -> bool:
    """True if ``name`` is an existing branch (False for any other revision, e.g. ``HEAD~1``)."""
    try:
        return branch_head(repo, name) is not None
    except InvalidInput:
        return False


def _ref_value(repo: Path, ref: str) -> str | None:
    known, sha = gitrefs.read_ref(repo, ref)
    if known:
        return sha
    result = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", ref], repo, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """True if ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
    result = _git(
        [
            "merge-base",
            "--is-ancestor",
            "--end-of-options",
            _check_rev(ancestor),
            _check_rev(descendant),
        ],
        repo,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GitError(_failure(result))
    return result.returncode == 0


# --- worktrees ---------------------------------------------------------------


@_serialized
def worktree_list(repo: Path) -> list[WorktreeInfo]:
    """Every worktree of ``repo``, the main one first (``git worktree list --porcelain -z``)."""
    out = _git(["worktree", "list", "--porcelain", "-z"], repo).stdout
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


def _find_worktree(repo: Path, path: Path) -> tuple[int, WorktreeInfo] | None:
    """(index in the list, entry) of the worktree at ``path``; index 0 is the main one."""
    for index, info in enumerate(worktree_list(repo)):
        if _same_path(info.path, path):
            return index, info
    return None


def checked_out_in(repo: Path, branch: str) -> WorktreeInfo | None:
    """The worktree (main checkout or linked) that has ``branch`` checked out, if any.

    A prunable entry (its directory is gone) does not count.
    """
    validate_branch_name(branch)
    for info in worktree_list(repo):
        if info.branch == branch and not info.bare and not info.prunable:
            return info
    return None


def worktree_add(
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
        _check_path(item)
    # A full sha was resolved by the caller; if its commit is missing, `add` says so.
    sha = base if _FULL_SHA.fullmatch(base) else rev_parse(repo, base)
    path = Path(os.path.abspath(path))
    existed = path.exists()
    if existed and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInput(f"worktree path exists and is not empty: {path}")
    if branch_head(repo, branch) is not None:
        raise AlreadyExists(f"branch already exists: {branch!r}")
    lock = ["--lock", "--reason", lock_reason] if lock_reason is not None else []
    _add_then_checkout(
        repo, path, ["-b", branch, *lock], sha, branch, keep_dir=existed, sparse=sparse
    )


def worktree_add_detached(repo: Path, path: Path, rev: str) -> str:
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
            _git(
                ["worktree", "add", "-q", "--no-checkout", *options,
                 "--end-of-options", str(path), sha],
                repo,
            )  # fmt: skip
        if sparse:  # paths on stdin: never in an option position
            _git(["sparse-checkout", "set", "--cone", "--stdin"], path, input="\n".join(sparse))
        _git([*_PARALLEL_CHECKOUT, "checkout", "-f", "-q"], path)
    except BaseException:
        with _admin_lock(repo):
            _undo_worktree_add(repo, path, branch, sha, keep_dir=keep_dir)
        raise


def _undo_worktree_add(
    repo: Path, path: Path, branch: str | None, sha: str, *, keep_dir: bool
) -> None:
    """Best-effort cleanup of a failed :func:`worktree_add`."""
    with contextlib.suppress(Exception):
        # Works on a half-made entry too: locked ("initializing") or with no directory.
        _git(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
    with contextlib.suppress(OSError):
        _rmtree(path)
        if keep_dir:
            path.mkdir(exist_ok=True)
    with contextlib.suppress(Exception):
        _git(["worktree", "prune"], repo, check=False)
        if branch is not None and branch_head(repo, branch) == sha:
            _git(["update-ref", "-d", f"refs/heads/{branch}", sha], repo, check=False)


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
def worktree_remove(repo: Path, path: Path) -> None:
    """Remove the linked worktree at ``path``, dirty or locked; a no-op when already gone.

    The directory is deleted only if git knows it as a linked worktree of
    ``repo`` or it still holds a ``.git`` file (a leftover linked worktree):
    an arbitrary directory is never deleted. The main worktree is refused.
    """
    path = Path(os.path.abspath(path))
    found = _find_worktree(repo, path)
    if found is not None and found[0] == 0:
        raise InvalidInput(f"refusing to remove the main worktree: {path}")
    if found is not None:
        _git(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
    if (found is not None or _is_leftover_worktree(repo, path)) and path.exists():
        _rmtree(path)
    if found is not None and found[1].locked and _find_worktree(repo, path) is not None:
        _git(["worktree", "unlock", str(path)], repo, check=False)
    prune_worktrees(repo)


def _is_leftover_worktree(repo: Path, path: Path) -> bool:
    """True if ``path`` has a ``.git`` file pointing into ``repo``'s worktree records."""
    dirs = gitrefs.git_dirs(path)
    if dirs is None or (path / ".git").is_dir():
        return False
    records = os.path.realpath(common_dir(repo) / "worktrees")
    return os.path.realpath(dirs.gitdir).startswith(records + os.sep)


@_serialized
def worktree_lock(repo: Path, path: Path, reason: str, *, new: bool = False) -> None:
    """Lock the worktree at ``path`` so that prune never removes it; no-op if locked.

    ``new=True``: the caller just made (or moved) it unlocked, so skip the lookup.
    """
    if not new:
        found = _find_worktree(repo, path)
        if found is None:
            raise NotFound(f"not a worktree of {repo}: {path}")
        if found[1].locked:
            return
    _git(["worktree", "lock", "--reason", reason, "--end-of-options", str(path)], repo)


@_serialized
def worktree_unlock(repo: Path, path: Path) -> None:
    """Unlock the worktree at ``path``; no-op if it is not locked or not registered."""
    found = _find_worktree(repo, path)
    if found is not None and found[1].locked:
        _git(["worktree", "unlock", "--end-of-options", str(path)], repo)


@_serialized
def prune_worktrees(repo: Path) -> None:
    """Drop git's records of worktrees whose directories are gone (unless locked)."""
    _git(["worktree", "prune"], repo)


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
        args.append(_check_rev(expected))
    result = _git(args, repo, check=False)
    if result.returncode == 0:
        return
    current = branch_head(repo, branch)
    if current is None:
        return
    if expected is not None:
        raise RefMoved(f"branch {branch!r} is at {current[:12]}, not {expected[:12]}; not deleted")
    raise GitError(_failure(result))


# --- working tree state and commits --------------------------------------------


def _status(worktree: Path, *, untracked: bool) -> list[tuple[str, str]]:
    """(XY code, path) pairs from ``git status --porcelain -z``; renames give both paths."""
    out = _git(
        [
            "--no-optional-locks",
            "status",
            "--porcelain=v1",
            "-z",
            f"--untracked-files={'all' if untracked else 'no'}",
        ],
        worktree,
    ).stdout
    fields = out.split("\0")
    entries: list[tuple[str, str]] = []
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if len(field) < 4:
            continue
        code = field[:2]
        entries.append((code, field[3:]))
        if code[0] in "RC" and i < len(fields):  # the next field is the original path
            entries.append((code, fields[i]))
            i += 1
    return entries


def _add_all(
    worktree: Path,
    env: Mapping[str, str] | None = None,
    *,
    exclude: Sequence[str] = (),
    leave: Sequence[str] = (),
) -> None:
    """``git add -A``, skipping what cannot be added instead of failing on it.

    An agent may leave a nested repository with no commit (``git init`` in a
    subdirectory) or an unreadable file; ``--ignore-errors`` adds everything
    else (exit 1 then). The skipped paths stay in the worktree. ``exclude``:
    paths (files or directories, relative to the top) never staged; ``leave``:
    the same, for paths git itself reported (not checked again).
    """
    # --sparse: in a sparse worktree, files the agent made outside the checked-out
    # directories are committed too (a no-op in a full checkout).
    args = ["add", "-A", "--sparse", "--ignore-errors"]
    specs = [*(_check_path(p) for p in exclude), *leave]
    if specs:
        args += ["--", ".", *(f":(exclude,literal){p}" for p in specs)]
    result = _git(args, worktree, check=False, env_extra=env)
    if result.returncode not in (0, 1):
        raise GitError(_failure(result))


def status_porcelain(worktree: Path, *, untracked: bool = True) -> list[str]:
    """Paths with uncommitted changes (both names of a rename), plus untracked files if asked."""
    paths = [path for _, path in _status(worktree, untracked=untracked)]
    return list(dict.fromkeys(paths))


def has_changes(worktree: Path) -> bool:
    """True if there is anything to commit, untracked (not ignored) files included."""
    out = _git(
        ["--no-optional-locks", "status", "--porcelain", "-z", "--untracked-files=normal"],
        worktree,
    ).stdout
    return bool(out)


@dataclass(frozen=True)
class Leftovers:
    """What :func:`commit_leftovers` did with the changes left in a worktree."""

    sha: str | None = None  # the commit it made; None when there was nothing to commit
    too_big: tuple[tuple[str, int], ...] = ()  # (path, bytes) over the limit: not committed
    ignored: tuple[str, ...] = ()  # staged new files the ignore rules match: unstaged


def commit_leftovers(
    worktree: Path,
    message: str,
    *,
    author_name: str,
    author_email: str,
    exclude: Sequence[str] = (),
    max_file_bytes: int | None = None,
) -> Leftovers:
    """Stage everything (``add -A``) and commit it as author and committer given, but:

    * ``exclude`` paths (files or directories) are not committed, even if staged;
    * files over ``max_file_bytes`` (their size on disk, as ``lstat`` gives it)
      are not committed, even if staged, and are named in the result;
    * new files that were staged (an agent's ``git add -f``) although the ignore
      rules match them are unstaged, and named in the result.

    What is left out stays in the worktree as it is; a file tracked at HEAD
    that is left out keeps its committed version. Hooks are skipped
    (``--no-verify``); no git identity needs to be configured. A clean
    worktree costs one git process.
    """
    if not message.strip():
        raise InvalidInput("commit message is empty")
    ident = _identity(author_name, author_email)
    staged = _stage(worktree, None, exclude=exclude, max_file_bytes=max_file_bytes)
    if staged is None:  # one process for the common case: nothing left over
        return Leftovers()
    diff = _git(["diff", "--cached", "--quiet", "--no-ext-diff"], worktree, check=False)
    if diff.returncode == 0:
        return staged
    if diff.returncode != 1:
        raise GitError(_failure(diff))
    _git(["commit", "--no-verify", "-q", "-F", "-"], worktree, input=message, env_extra=ident)
    sha = _git(["rev-parse", "HEAD"], worktree).stdout.strip()
    return dataclasses.replace(staged, sha=sha)


def _stage(
    worktree: Path,
    env: Mapping[str, str] | None,
    *,
    exclude: Sequence[str],
    max_file_bytes: int | None,
) -> Leftovers | None:
    """Stage what an automatic commit (or snapshot) may hold, in the index ``env`` names.

    Everything (``add -A``) but ``exclude`` paths, regular files over
    ``max_file_bytes`` and new files staged although the ignore rules match
    them (those two are named in the result; all three are unstaged if they
    were staged). None when ``git status`` shows nothing at all.
    """
    entries = _status(worktree, untracked=True)
    if not entries:
        return None
    too_big = _oversized(worktree, entries, max_file_bytes)
    big = {path for path, _ in too_big}
    ignored = _staged_ignored(worktree, entries, env)
    staged = {path for code, path in entries if code[0] not in " ?"}
    held = sorted(p for p in staged if p in big or _is_under(p, exclude)) + ignored
    if held:
        _unstage(worktree, held, env)
    _add_all(worktree, env, exclude=exclude, leave=sorted(big))
    return Leftovers(too_big=too_big, ignored=tuple(ignored))


def _is_under(path: str, dirs: Sequence[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in dirs)


def _oversized(
    worktree: Path, entries: Sequence[tuple[str, str]], max_bytes: int | None
) -> tuple[tuple[str, int], ...]:
    """(path, size) of the regular files among ``entries`` larger than ``max_bytes``."""
    if max_bytes is None:
        return ()
    found: dict[str, int] = {}
    for _, path in entries:
        try:
            st = os.lstat(worktree / path)
        except OSError:  # deleted, or a name that did not decode: nothing to weigh
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
            found[path] = st.st_size
    return tuple(sorted(found.items()))


def _staged_ignored(
    worktree: Path, entries: Sequence[tuple[str, str]], env: Mapping[str, str] | None = None
) -> list[str]:
    """Staged paths not at HEAD (added, renamed or copied) that the ignore rules match."""
    new = {path for code, path in entries if code[0] in "ARC"}
    if not new:
        return []
    out = _git(
        ["ls-files", "-z", "--cached", "--ignored", "--exclude-standard"], worktree, env_extra=env
    ).stdout
    return sorted(new.intersection(out.split("\0")))


def _unstage(worktree: Path, paths: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Reset the index entries of ``paths`` to HEAD (a path not at HEAD leaves the index);
    the files themselves are not touched."""
    _git(
        ["reset", "-q", "--pathspec-from-file=-", "--pathspec-file-nul"],
        worktree,
        input="\0".join(paths),
        env_extra={**(env or {}), "GIT_LITERAL_PATHSPECS": "1"},
    )


# --- diffs -------------------------------------------------------------------------


def diffstat(repo: Path, base: str, head: str) -> DiffStat:
    """Files, insertions and deletions between ``base`` and ``head`` (binary files count 0)."""
    out = _git(
        [
            "diff",
            "--numstat",
            "-z",
            "--no-ext-diff",
            "--end-of-options",
            _check_rev(base),
            _check_rev(head),
            "--",
        ],
        repo,
    ).stdout
    fields = out.split("\0")
    insertions = deletions = 0
    paths: list[str] = []
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if not field:
            continue
        added, deleted, path = field.split("\t", 2)
        if not path and i + 1 < len(fields):  # rename/copy: "<old>\0<new>" follow
            path = fields[i + 1]
            i += 2
        insertions += int(added) if added.isdigit() else 0
        deletions += int(deleted) if deleted.isdigit() else 0
        paths.append(path)
    return DiffStat(files=len(paths), insertions=insertions, deletions=deletions, paths=paths)


@dataclass(frozen=True)
class BranchStats:
    """How ``head`` relates to ``base``: the figures a finished job records."""

    ahead: int  # commits in head that are not in base
    contains_base: bool  # base is an ancestor of head (history was not rewritten)
    diff: DiffStat


def branch_stats(repo: Path, base: str, head: str) -> BranchStats:
    """:class:`BranchStats` in two git processes (none when ``head`` is ``base``)."""
    if base == head and _FULL_SHA.fullmatch(base):
        return BranchStats(0, True, DiffStat(files=0, insertions=0, deletions=0, paths=[]))
    out = _git(
        ["rev-list", "--left-right", "--count", "--end-of-options",
         f"{_check_rev(base)}...{_check_rev(head)}"],
        repo,
    ).stdout.split()  # fmt: skip
    behind, ahead = int(out[0]), int(out[1])
    # base is an ancestor of head exactly when no commit of base is missing from head.
    return BranchStats(ahead, behind == 0, diffstat(repo, base, head))


def diff(repo: Path, base: str, head: str, *, stat: bool = False) -> str:
    """``git diff base head``: the full patch, or the ``--stat`` summary."""
    args = ["diff", "--no-color", "--no-ext-diff"] + (["--stat"] if stat else [])
    args += ["--end-of-options", _check_rev(base), _check_rev(head), "--"]
    return _git(args, repo).stdout


# --- merging -------------------------------------------------------------------


def merge_check(repo: Path, ours: str, theirs: str) -> MergeCheck:
    """Merge ``theirs`` into ``ours`` in memory (``merge-tree --write-tree``); no worktree."""
    result = _git(
        [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            "--end-of-options",
            _check_rev(ours),
            _check_rev(theirs),
        ],
        repo,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GitError(_failure(result))
    fields = result.stdout.split("\0")
    clean = result.returncode == 0
    conflicts = [] if clean else sorted({f for f in fields[1:] if f})
    return MergeCheck(clean=clean, tree=fields[0].strip(), conflicts=conflicts)


def _conflict(files: list[str], what: str = "merge conflict") -> MergeConflict:
    return MergeConflict(
        f"{what} in {len(files)} file(s): {_files_summary(files)}", details={"files": files}
    )


def _commit_tree(
    repo: Path, tree: str, parents: Sequence[str], message: str, env: Mapping[str, str]
) -> str:
    args = ["commit-tree"]
    for parent in parents:
        args += ["-p", parent]
    text = message if message.endswith("\n") else message + "\n"
    return _git([*args, "-F", "-", tree], repo, input=text, env_extra=env).stdout.strip()


def _commits_to_replay(repo: Path, base: str, source: str) -> list[_Commit]:
    """Non-merge commits of ``base..source``, oldest first, with what a replay needs."""
    fmt = "%H%x00%P%x00%T%x00%an%x00%ae%x00%ad%x00%B%x00"
    out = _git(
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
    tip_tree = _git(["rev-parse", f"{old}^{{tree}}"], repo).stdout.strip()
    for commit in _commits_to_replay(repo, base, source):
        if not commit.parent:
            raise InvalidInput(f"cannot rebase root commit {commit.sha[:12]}")
        if commit.parent == tip:
            tip, tip_tree = commit.sha, commit.tree
            continue
        onto = _commit_tree(repo, tip_tree, [commit.parent], "dispatcher rebase step", ident)
        check = merge_check(repo, onto, commit.sha)
        if not check.clean:
            subject = _first_line(commit.message)
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
        tip = _commit_tree(repo, check.tree, [tip], commit.message, env)
        tip_tree = check.tree
    return tip


def _cas_update(repo: Path, ref: str, new: str, old: str, msg: str) -> None:
    """Move ``ref`` from ``old`` to ``new`` atomically; RefMoved if it is no longer at ``old``."""
    result = _git(
        ["update-ref", "-m", msg or "dispatcher", "--end-of-options", ref, new, old],
        repo,
        check=False,
    )
    if result.returncode == 0:
        return
    current = _ref_value(repo, ref)
    if current != old:
        raise RefMoved(
            f"{ref} moved (expected {old[:12]}, found {(current or 'nothing')[:12]}); "
            "nothing was changed, try again"
        )
    raise GitError(_failure(result))


def _land(
    repo: Path, target: str, old: str, new: str, msg: str, *, journal: Path, landing: _Intent
) -> None:
    """Move ``target`` from ``old`` to ``new`` by compare-and-swap, updating its checkout
    if it has one (:func:`_update_checkout`). The journal at ``journal`` says what is
    under way until the caller, having recorded the merge, discards it; it is removed
    here when nothing moved."""
    moved = RefMoved(f"{target} moved during the merge; nothing was changed, try again")
    ref = f"refs/heads/{target}"
    where = checked_out_in(repo, target)
    index = _index_file(where.path) if where is not None else None
    record = merge_journal.Landing(
        label=landing.label, repo=str(repo), target=target, old=old, new=new,
        strategy=landing.strategy, source=landing.source, nonce=secrets.token_hex(8),
        worktree=str(where.path) if where is not None else None,
        index=str(index) if index is not None else None,
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
        if where is None and _ref_value(repo, ref) != new:
            merge_journal.discard(journal)
        raise


@dataclass(frozen=True)
class _Intent:
    """What the journal records about a merge besides the refs."""

    label: str
    strategy: str
    source: str


def _index_file(worktree: Path) -> Path:
    """The absolute path of ``worktree``'s index file."""
    out = _git(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree).stdout
    return Path(out.strip())


def _head_branch(worktree: Path) -> str | None:
    """The branch ``worktree``'s HEAD names (main checkout or linked), None if detached."""
    head = gitrefs.head_branch(worktree)
    if head is not None:
        return head[1]
    result = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree, check=False)
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
        _git(["update-index", "-q", "--refresh"], worktree, check=False, env_extra=env)
        result = _git(["read-tree", "-m", "-u", old, new], worktree, check=False, env_extra=env)
        if result.returncode != 0:
            _undo_files(worktree, old, new)  # a failure part-way may have written some
            raise _refusal(worktree, target, result)
        faults.reach("merge.files-updated")
        try:
            _cas_update(repo, f"refs/heads/{target}", new, old, msg)
        except BaseException:
            if _ref_value(repo, f"refs/heads/{target}") != new:
                _undo_files(worktree, old, new)
            raise
        faults.reach("merge.ref-moved")
        os.replace(scratch, index)
        installed = True
    finally:
        # Landed but the index not installed (an I/O error): keep the lock and the
        # new index, so that nothing runs on a checkout whose index does not match
        # HEAD; the next start installs it from the journal.
        if installed or _ref_value(repo, f"refs/heads/{target}") != new:
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
    out = _git(
        ["diff", "--name-status", "-z", "--no-renames", "--no-ext-diff", "--end-of-options",
         _check_rev(old), _check_rev(new), "--"],
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
    return GitError(_failure(result))


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
    current = _ref_value(repo, f"refs/heads/{landing.target}")
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
            _git(
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
    listing = _git(["ls-tree", "-r", "-z", "--full-tree", _check_rev(rev)], worktree).stdout
    entries = [
        entry
        for entry in listing.split("\0")
        if entry.partition("\t")[2] in paths and " blob " in entry.partition("\t")[0]
    ]
    env = {"GIT_INDEX_FILE": str(index)}
    _git(["read-tree", "--empty"], worktree, env_extra=env)
    if not entries:
        return set()
    _git(
        ["update-index", "-z", "--index-info"],
        worktree,
        input="\0".join(entries) + "\0",
        env_extra=env,
    )
    _git(["update-index", "-q", "--refresh"], worktree, check=False, env_extra=env)
    differ = _git(["diff-files", "--name-only", "-z"], worktree, env_extra=env).stdout
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


def branches_merged_into(repo: Path, target: str) -> dict[str, str]:
    """``{branch: sha}`` of every branch whose tip ``target`` contains (one git process)."""
    validate_branch_name(target)
    out = _git(
        ["for-each-ref", "--format=%(objectname) %(refname)",
         f"--merged=refs/heads/{target}", "--", "refs/heads/"],
        repo,
    ).stdout  # fmt: skip
    merged: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        if name.startswith("refs/heads/"):
            merged[name.removeprefix("refs/heads/")] = sha
    return merged


# Merges into one target branch run one at a time: each is computed on the tip the
# one before left, and no two update one checkout together.
_TARGET_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_TARGET_LOCKS_GUARD = threading.Lock()


def _target_lock(repo: Path, target: str) -> threading.Lock:
    dirs = gitrefs.git_dirs(repo)
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
    :mod:`~dispatcher.merge_journal` record is written at ``journal`` (named
    ``label``); it is left for the caller to discard once it has recorded the
    merge, and :func:`recover_landing` finishes or undoes it after a crash.
    """
    if strategy not in _STRATEGIES:
        raise InvalidInput(
            f"unknown merge strategy {strategy!r}; use one of {', '.join(_STRATEGIES)}"
        )
    ident = _identity(author_name, author_email)
    _check_rev(base)
    validate_branch_name(target_branch)
    theirs = rev_parse(repo, source)
    with _target_lock(repo, target_branch):
        old = branch_head(repo, target_branch)
        if old is None:
            raise NotFound(f"no such branch: {target_branch!r}")
        new = _merged_commit(repo, strategy, target_branch, old, theirs, base, message, ident)
        if new == old:
            return old
        faults.reach("merge.computed")
        reflog = f"dispatcher {strategy}: {_first_line(message) or theirs[:12]}"
        intent = _Intent(label=label, strategy=strategy, source=theirs)
        _land(repo, target_branch, old, new, reflog, journal=journal, landing=intent)
        return new


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
    check = merge_check(repo, old, theirs)
    if not check.clean:
        raise _conflict(check.conflicts)
    if strategy == "merge":
        return _commit_tree(repo, check.tree, [old, theirs], message, ident)
    if strategy == "squash":
        if check.tree == _git(["rev-parse", f"{old}^{{tree}}"], repo).stdout.strip():
            return old  # the changes are already there (squashed before)
        return _commit_tree(repo, check.tree, [old], message, ident)
    return _rebase(repo, old, rev_parse(repo, base), theirs, ident)


# --- reading refs and files (for triggers) -------------------------------------


def for_each_ref(repo: Path, prefix: str = "refs/heads/") -> dict[str, str]:
    """``{refname: sha}`` for every ref under ``prefix`` (loose and packed alike)."""
    out = _git(["for-each-ref", "--format=%(objectname) %(refname)", "--", prefix], repo).stdout
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        if name:
            refs[name] = sha
    return refs


def changed_paths(repo: Path, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (renames reported under both names)."""
    out = _git(
        ["diff", "--name-only", "-z", "--no-renames", "--end-of-options",
         _check_rev(old), _check_rev(new), "--"],
        repo,
    ).stdout  # fmt: skip
    return sorted({p for p in out.split("\0") if p})


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    message: str
    author_name: str
    author_email: str
    timestamp: str  # ISO 8601 author date


def commits_between(repo: Path, old: str | None, new: str, *, limit: int = 100) -> list[CommitInfo]:
    """Commits reachable from ``new`` and not from ``old`` (newest last), at most ``limit``."""
    rng = [_check_rev(new)] if old is None else [f"{_check_rev(old)}..{_check_rev(new)}"]
    out = _git(
        ["log", "--reverse", f"--max-count={limit}", "-z",
         "--format=%H%x1f%an%x1f%ae%x1f%aI%x1f%B", "--end-of-options", *rng, "--"],
        repo,
    ).stdout  # fmt: skip
    commits = []
    for record in out.split("\0"):
        if not record.strip():
            continue
        sha, name, email, when, message = record.lstrip("\n").split("\x1f", 4)
        commits.append(CommitInfo(sha, message.strip(), name, email, when))
    return commits


def merge_base(repo: Path, a: str, b: str) -> str | None:
    result = _git(
        ["merge-base", "--end-of-options", _check_rev(a), _check_rev(b)], repo, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _check_path(path: str) -> str:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts or _has_control(path) or ":" in path[:1]:
        raise InvalidInput(f"path must stay inside the repository: {path!r}")
    return path


def blob_id(repo: Path, rev: str, path: str) -> str | None:
    """The blob sha of ``path`` at ``rev``, or None if it does not exist there."""
    spec = f"{_check_rev(rev)}:{_check_path(path)}"
    result = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", spec], repo, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def read_file(repo: Path, rev: str, path: str) -> str | None:
    """The text of ``path`` at ``rev`` (as committed), or None if it does not exist there."""
    sha = blob_id(repo, rev, path)
    if sha is None:
        return None
    return _git(["cat-file", "blob", sha], repo).stdout


def read_blobs(repo: Path, rev: str, paths: Sequence[str]) -> dict[str, str]:
    """Text of the files at ``rev`` among ``paths``: a file path names itself, a path
    ending in ``/`` names the files directly in that directory. One ``ls-tree`` (and
    one ``cat-file`` per file found); {} when none exists."""
    spec = ["--end-of-options", _check_rev(rev), "--", *(_check_path(p) for p in paths)]
    listing = _git(["ls-tree", "-z", *spec], repo, check=False)
    if listing.returncode != 0:
        return {}
    texts: dict[str, str] = {}
    for entry in listing.stdout.split("\0"):
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            texts[name] = _git(["cat-file", "blob", parts[2]], repo).stdout
    return texts


def remote_url(repo: Path, remote: str = "origin") -> str | None:
    result = _git(["config", "--get", f"remote.{remote}.url"], repo, check=False)
    return result.stdout.strip() or None


# --- saving and checking worktrees (for the sweeper) ----------------------------

_SAVE_REF_PREFIX = "refs/dispatcher/"


@functools.lru_cache(maxsize=4096)
def _git_accepts_ref(ref: str) -> bool:
    # No --end-of-options here (check-ref-format refuses it); callers pass "refs/...".
    return _git(["check-ref-format", ref], "/", check=False).returncode == 0


def _check_save_ref(ref: str) -> str:
    """Refuse a ref outside ``refs/dispatcher/`` or one git would not accept."""
    if not ref.startswith(_SAVE_REF_PREFIX) or len(ref) == len(_SAVE_REF_PREFIX):
        raise InvalidInput(f"invalid ref {ref!r}: must be under {_SAVE_REF_PREFIX}")
    if _has_control(ref) or not _git_accepts_ref(ref):
        raise InvalidInput(f"invalid ref {ref!r}: rejected by git check-ref-format")
    return ref


def update_ref(repo: Path, ref: str, sha: str, message: str = "dispatcher") -> None:
    """Point ``ref`` (under ``refs/dispatcher/``) at commit ``sha``, with a reflog entry.

    An existing value is overwritten; the reflog keeps the previous one.
    """
    _check_save_ref(ref)
    commit = rev_parse(repo, sha)
    _git(
        ["update-ref", "--create-reflog", "-m", _first_line(message) or "dispatcher",
         "--end-of-options", ref, commit],
        repo,
    )  # fmt: skip


def snapshot_worktree(
    worktree: Path,
    ref: str,
    message: str,
    *,
    author_name: str,
    author_email: str,
    exclude: Sequence[str] = (),
    max_file_bytes: int | None = None,
) -> Leftovers:
    """Snapshot everything uncommitted in ``worktree`` into a commit at ``ref``.

    Tracked changes (staged or not), deletions and untracked files that are not
    ignored go into one commit whose parent is the worktree's HEAD (detached or
    not; no parent when HEAD is unborn). The worktree's files, its index and
    its branch are left exactly as they were: the snapshot is staged in a
    temporary copy of the index. ``ref`` must be under ``refs/dispatcher/``;
    an existing value is overwritten (its reflog keeps the old one). The
    result's sha is None (and ``ref`` is not touched) when there is nothing
    uncommitted to save.

    What is staged follows :func:`commit_leftovers`: ``exclude`` paths, ignored
    files (also force-added ones, named in ``ignored``) and files over
    ``max_file_bytes`` (named in ``too_big``) are not saved; a tracked file
    left out keeps its HEAD version in the snapshot.
    """
    _check_save_ref(ref)
    if not message.strip():
        raise InvalidInput("commit message is empty")
    ident = _identity(author_name, author_email)
    head_result = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], worktree, check=False)
    head = head_result.stdout.strip() if head_result.returncode == 0 else None
    index = Path(
        _git(
            ["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="dispatcher-index-") as tmp:
        tmp_index = Path(tmp) / "index"
        if index.is_file():
            shutil.copyfile(index, tmp_index)
        env = {"GIT_INDEX_FILE": str(tmp_index)}
        staged = _stage(worktree, env, exclude=exclude, max_file_bytes=max_file_bytes)
        if staged is None:
            return Leftovers()
        tree = _git(["write-tree"], worktree, env_extra=env).stdout.strip()
    if head is not None:
        base_tree = _git(["rev-parse", f"{head}^{{tree}}"], worktree).stdout.strip()
    else:
        base_tree = _git(["mktree"], worktree, input="").stdout.strip()  # the empty tree
    if tree == base_tree:
        return staged
    sha = _commit_tree(worktree, tree, [head] if head else [], message, ident)
    _git(
        ["update-ref", "--create-reflog", "-m", _first_line(message),
         "--end-of-options", ref, sha],
        worktree,
    )  # fmt: skip
    return dataclasses.replace(staged, sha=sha)


def is_referenced(repo: Path, sha: str) -> bool:
    """True if some ref of ``repo`` (branch, tag, remote, ``refs/dispatcher/``...) contains ``sha``.

    A commit that is not referenced is kept only by a worktree's HEAD, and is
    lost once that worktree is removed.
    """
    out = _git(
        ["for-each-ref", "--count=1", "--format=%(refname)", "--contains",
         rev_parse(repo, sha), "refs/"],
        repo,
    ).stdout  # fmt: skip
    return bool(out.strip())


def worktree_is_valid(worktree: Path, repo: Path | None = None) -> bool:
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
        result = _git(
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


def changed_gitlinks(repo: Path, commit: str) -> list[str]:
    """Paths where ``commit`` adds or moves a gitlink (a nested repository or submodule).

    A snapshot records such a path only as a commit id, not its files: before
    removing a worktree whose snapshot has any, keep the directory instead.
    """
    sha = rev_parse(repo, commit)
    out = _git(
        ["diff-tree", "-r", "-z", "--no-renames", "--root", "--diff-filter=AMT",
         "--no-commit-id", "--end-of-options", sha],
        repo,
    ).stdout  # fmt: skip
    fields = out.split("\0")
    paths = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        parts = meta.split()
        if len(parts) >= 2 and parts[1] == "160000":  # ":<old mode> <new mode> ..."
            paths.append(path)
    return sorted(paths)


# --- recycling worktrees (the warm pool) ---------------------------------------


@_serialized
def worktree_move(repo: Path, src: Path, dst: Path) -> None:
    """``git worktree move``: rename a linked worktree (locked or not); ``dst`` must not exist."""
    dst = Path(os.path.abspath(dst))
    if dst.exists():
        raise InvalidInput(f"worktree destination exists: {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _git(
        ["worktree", "move", "--force", "--force", "--end-of-options",
         str(Path(os.path.abspath(src))), str(dst)],
        repo,
    )  # fmt: skip


def _clean_args(keep: Sequence[str]) -> list[str]:
    args = ["clean", "-ffdxq"]  # -ff: nested repositories too; -x: ignored files too
    for name in keep:
        _check_path(name)
        args += ["-e", f"/{name.strip('/')}/"]  # anchored: only that top-level directory
    return args


def recycle_worktree(worktree: Path, branch: str, base: str, *, keep: Sequence[str] = ()) -> None:
    """Turn a used worktree into a fresh checkout of ``base`` on the new ``branch``.

    ``checkout -f -B`` resets index and tracked files to ``base`` and ``clean -ffdx``
    removes every untracked and ignored file, except the top-level directories
    named in ``keep`` (dependency installs worth reusing: node_modules, .venv).
    Costs only what differs between the old and the new commit.
    """
    validate_branch_name(branch)
    # Two git processes on the spawn path: a full sha needs no rev-parse, and
    # `checkout -b` itself refuses a branch that exists (never resets one).
    sha = base if _FULL_SHA.fullmatch(base) else rev_parse(worktree, base)
    result = _git(["checkout", "-q", "-f", "-b", branch, sha, "--"], worktree, check=False)
    if result.returncode != 0:
        if branch_head(worktree, branch) is not None:
            raise AlreadyExists(f"branch already exists: {branch!r}")
        raise GitError(_failure(result))
    _git(_clean_args(keep), worktree)


def detach_head(worktree: Path) -> None:
    """Detach the worktree's HEAD where it is (writes HEAD only: instant), freeing its branch."""
    sha = _git(["rev-parse", "--verify", "HEAD^{commit}"], worktree).stdout.strip()
    _git(["update-ref", "--no-deref", "-m", "dispatcher: released", "HEAD", sha], worktree)


def reset_detached(worktree: Path, rev: str, *, keep: Sequence[str] = ()) -> None:
    """Detach ``worktree`` at ``rev`` and remove every file not in that commit (but ``keep``)."""
    sha = rev_parse(worktree, rev)
    _git(["checkout", "-q", "-f", "--detach", sha, "--"], worktree)
    _git(_clean_args(keep), worktree)


def is_sparse(worktree: Path) -> bool:
    """True if ``worktree`` has a sparse checkout (``git sparse-checkout set`` was run in it)."""
    dirs = gitrefs.git_dirs(worktree)
    return dirs is not None and (dirs.gitdir / "info" / "sparse-checkout").is_file()


def current_branch(worktree: Path) -> str | None:
    """The branch checked out in ``worktree``, or None when its HEAD is detached.

    One git process whatever the number of worktrees (unlike ``worktree list``).
    Raises :class:`GitError` when ``worktree`` is not a working linked worktree.
    """
    if not (worktree / ".git").is_file():
        raise InvalidInput(f"not a linked worktree (no .git file): {worktree}")
    head = gitrefs.head_branch(worktree)
    if head is not None:
        return head[1]
    result = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], worktree, check=False)
    if result.returncode == 0:
        return result.stdout.strip()
    if result.returncode == 1:
        return None
    raise GitError(_failure(result))


def worktree_delete_unlocked(repo: Path, path: Path) -> None:
    """Remove an unlocked, unneeded linked worktree without holding the repository's
    worktree lock while its files are deleted (that can take seconds): delete the
    directory first, then let a quick ``git worktree prune`` drop the record."""
    path = Path(os.path.abspath(path))
    if path.exists() and _is_leftover_worktree(repo, path):
        _rmtree(path)
    prune_worktrees(repo)
