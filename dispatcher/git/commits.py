"""What an agent left in a worktree: status, staging, the automatic commit, snapshots.

The daemon commits an agent's leftovers (:func:`commit_leftovers`) and saves a
worktree it is about to drop into a ref under ``refs/dispatcher/``
(:func:`snapshot_worktree`), staging the same way for both: everything but
excluded paths, oversized files and force-added ignored ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.errors import InvalidInput
from dispatcher.git import cmd
from dispatcher.git.names import check_save_ref, identity
from dispatcher.git.refs import head_commit, rev_parse
from dispatcher.paths import inside_repo


def _status(worktree: Path, *, untracked: bool) -> list[tuple[str, str]]:
    """(XY code, path) pairs from ``git status --porcelain -z``; renames give both paths."""
    out = cmd.run(
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
    specs = [*(inside_repo(p) for p in exclude), *leave]
    if specs:
        args += ["--", ".", *(f":(exclude,literal){p}" for p in specs)]
    cmd.answer(args, worktree, env_extra=env)


def status_porcelain(worktree: Path, *, untracked: bool = True) -> list[str]:
    """Paths with uncommitted changes (both names of a rename), plus untracked files if asked."""
    paths = [path for _, path in _status(worktree, untracked=untracked)]
    return list(dict.fromkeys(paths))


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
    ident = identity(author_name, author_email)
    staged = _stage(worktree, None, exclude=exclude, max_file_bytes=max_file_bytes)
    if staged is None:  # one process for the common case: nothing left over
        return Leftovers()
    if cmd.answer(["diff", "--cached", "--quiet", "--no-ext-diff"], worktree).returncode == 0:
        return staged
    cmd.run(["commit", "--no-verify", "-q", "-F", "-"], worktree, input=message, env_extra=ident)
    sha = head_commit(worktree)
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
    out = cmd.run(
        ["ls-files", "-z", "--cached", "--ignored", "--exclude-standard"], worktree, env_extra=env
    ).stdout
    return sorted(new.intersection(out.split("\0")))


def _unstage(worktree: Path, paths: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Reset the index entries of ``paths`` to HEAD (a path not at HEAD leaves the index);
    the files themselves are not touched."""
    cmd.run(
        ["reset", "-q", "--pathspec-from-file=-", "--pathspec-file-nul"],
        worktree,
        input="\0".join(paths),
        env_extra={**(env or {}), "GIT_LITERAL_PATHSPECS": "1"},
    )


def commit_tree(
    repo: Path, tree: str, parents: Sequence[str], message: str, env: Mapping[str, str]
) -> str:
    """A new commit of ``tree`` with ``parents``, made as ``env`` says (``commit-tree``)."""
    args = ["commit-tree"]
    for parent in parents:
        args += ["-p", parent]
    text = message if message.endswith("\n") else message + "\n"
    return cmd.run([*args, "-F", "-", tree], repo, input=text, env_extra=env).stdout.strip()


def first_line(message: str) -> str:
    """The subject of a commit message (its first non-blank line); "" when blank."""
    return message.strip().splitlines()[0] if message.strip() else ""


def update_ref(repo: Path, ref: str, sha: str, message: str = "dispatcher") -> None:
    """Point ``ref`` (under ``refs/dispatcher/``) at commit ``sha``, with a reflog entry.

    An existing value is overwritten; the reflog keeps the previous one.
    """
    check_save_ref(ref)
    commit = rev_parse(repo, sha)
    cmd.run(
        ["update-ref", "--create-reflog", "-m", first_line(message) or "dispatcher",
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
    check_save_ref(ref)
    if not message.strip():
        raise InvalidInput("commit message is empty")
    ident = identity(author_name, author_email)
    head_result = cmd.run(
        ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], worktree, check=False
    )
    head = head_result.stdout.strip() if head_result.returncode == 0 else None
    with _scratch_index(worktree) as (env, _had_index):
        staged = _stage(worktree, env, exclude=exclude, max_file_bytes=max_file_bytes)
        if staged is None:
            return Leftovers()
        tree = cmd.run(["write-tree"], worktree, env_extra=env).stdout.strip()
    if head is not None:
        base_tree = cmd.run(["rev-parse", f"{head}^{{tree}}"], worktree).stdout.strip()
    else:
        base_tree = cmd.run(["mktree"], worktree, input="").stdout.strip()  # the empty tree
    if tree == base_tree:
        return staged
    sha = commit_tree(worktree, tree, [head] if head else [], message, ident)
    cmd.run(
        ["update-ref", "--create-reflog", "-m", first_line(message),
         "--end-of-options", ref, sha],
        worktree,
    )  # fmt: skip
    return dataclasses.replace(staged, sha=sha)


@contextlib.contextmanager
def _scratch_index(worktree: Path) -> Iterator[tuple[dict[str, str], bool]]:
    """A temporary copy of ``worktree``'s index, as the environment that makes git use it
    (``GIT_INDEX_FILE``), and whether the worktree had an index to copy: staging there
    leaves the worktree's own index as it is. Removed afterwards."""
    index = Path(
        cmd.run(
            ["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="dispatcher-index-") as tmp:
        tmp_index = Path(tmp) / "index"
        had = index.is_file()
        if had:
            shutil.copyfile(index, tmp_index)
        yield {"GIT_INDEX_FILE": str(tmp_index)}, had


def snapshot_tree(
    worktree: Path,
    *,
    exclude: Sequence[str] = (),
    max_file_bytes: int | None = None,
) -> str:
    """The tree of ``worktree``'s current files (tracked, changed or not, and untracked
    ones that are not ignored), staged as :func:`snapshot_worktree` stages them, in a
    temporary copy of the index (``GIT_INDEX_FILE``): the worktree's own index, HEAD and
    branch are not touched. Work in progress pushed while an agent runs (docs/cluster.md)."""
    with _scratch_index(worktree) as (env, had_index):
        if not had_index:  # no index yet: start from HEAD's tree
            cmd.run(["read-tree", "HEAD"], worktree, check=False, env_extra=env)
        _stage(worktree, env, exclude=exclude, max_file_bytes=max_file_bytes)
        return cmd.run(["write-tree"], worktree, env_extra=env).stdout.strip()
