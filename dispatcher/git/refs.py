"""Queries of a repository's refs and commits, and of the differences between commits.

Small questions, each one git process at most (a branch's tip is read from the
repo's files first, :mod:`dispatcher.git.dotgit`). Nothing here writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dispatcher.errors import InvalidInput, NotFound
from dispatcher.git import cmd, dotgit
from dispatcher.git.names import check_rev, is_full_sha, is_plain_branch, validate_branch_name

# --- the repository ----------------------------------------------------------------


def toplevel(path: Path) -> Path:
    """Absolute top of the work tree containing ``path`` (a directory or a file in it).

    Raises InvalidInput when ``path`` is missing, not in a git work tree, or in a bare repo.
    """
    path = Path(os.path.abspath(path))
    where = path if path.is_dir() else path.parent
    if not path.exists() or not where.is_dir():
        raise InvalidInput(f"not a git repository: {path}")
    result = cmd.run(["rev-parse", "--show-toplevel"], where, check=False)
    top = result.stdout.strip()
    if result.returncode != 0 or not top:
        raise InvalidInput(f"not a git repository: {path}")
    return Path(top)


def common_dir(repo: Path) -> Path:
    """Absolute path of the repository's common git dir (shared by all its worktrees)."""
    result = cmd.run(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo, check=False)
    if result.returncode != 0:
        raise InvalidInput(f"not a git repository: {repo}")
    return Path(result.stdout.strip())


def default_branch(repo: Path) -> str:
    """The branch HEAD points to (even unborn); if detached, "main" or else "master" if present."""
    result = cmd.answer(["symbolic-ref", "--quiet", "--short", "HEAD"], repo)
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    found = cmd.run(
        ["for-each-ref", "--format=%(refname:short)", "refs/heads/main", "refs/heads/master"], repo
    ).stdout.split()
    for name in ("main", "master"):
        if name in found:
            return name
    raise InvalidInput(f"HEAD is detached in {repo} and there is no main or master branch")


# --- refs and commits ---------------------------------------------------------------


def rev_parse(repo: Path, rev: str) -> str:
    """Full sha of the commit ``rev`` names; NotFound if there is none."""
    check_rev(rev)
    # Most bases are a branch: read it from the files, no process.
    if is_plain_branch(rev) and not is_full_sha(rev):
        known, sha = dotgit.resolve_branch_name(repo, rev)
        if known and sha is not None:
            return sha
    result = cmd.run(
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
    return ref_value(repo, f"refs/heads/{branch}")


def is_branch(repo: Path, name: str) -> bool:
    """True if ``name`` is an existing branch (False for any other revision, e.g. ``HEAD~1``)."""
    try:
        return branch_head(repo, name) is not None
    except InvalidInput:
        return False


def ref_value(repo: Path, ref: str) -> str | None:
    """Sha of the full ref name ``ref`` (``refs/heads/main``), or None if it does not exist."""
    known, sha = dotgit.read_ref(repo, ref)
    if known:
        return sha
    result = cmd.run(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", ref], repo, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def head_commit(worktree: Path) -> str:
    """Sha of the commit ``worktree``'s HEAD is at, read from the files when they say
    plainly (a branch's ref, a detached sha), else from ``git rev-parse``."""
    head = dotgit.head_branch(worktree)
    if head is not None:
        branch = head[1]
        known, sha = (
            dotgit.read_ref(worktree, f"refs/heads/{branch}")
            if branch is not None
            else dotgit.detached_head(worktree)
        )
        if known and sha is not None:
            return sha
    return cmd.run(["rev-parse", "--verify", "HEAD^{commit}"], worktree).stdout.strip()


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """True if ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
    args = ["merge-base", "--is-ancestor", "--end-of-options", check_rev(ancestor)]
    return cmd.answer([*args, check_rev(descendant)], repo).returncode == 0


def merge_base(repo: Path, a: str, b: str) -> str | None:
    """The best common ancestor of ``a`` and ``b``; None when they share no history."""
    result = cmd.run(
        ["merge-base", "--end-of-options", check_rev(a), check_rev(b)], repo, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def for_each_ref(repo: Path, prefix: str = "refs/heads/") -> dict[str, str]:
    """``{refname: sha}`` for every ref under ``prefix`` (loose and packed alike)."""
    out = cmd.run(["for-each-ref", "--format=%(objectname) %(refname)", "--", prefix], repo).stdout
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        if name:
            refs[name] = sha
    return refs


def branches_merged_into(repo: Path, target: str) -> dict[str, str]:
    """``{branch: sha}`` of every branch whose tip ``target`` contains (one git process)."""
    validate_branch_name(target)
    out = cmd.run(
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


def is_referenced(repo: Path, sha: str) -> bool:
    """True if some ref of ``repo`` (branch, tag, remote, ``refs/dispatcher/``...) contains ``sha``.

    A commit that is not referenced is kept only by a worktree's HEAD, and is
    lost once that worktree is removed.
    """
    out = cmd.run(
        ["for-each-ref", "--count=1", "--format=%(refname)", "--contains",
         rev_parse(repo, sha), "refs/"],
        repo,
    ).stdout  # fmt: skip
    return bool(out.strip())


@dataclass(frozen=True)
class CommitInfo:
    """One commit as a push event describes it."""

    sha: str
    message: str
    author_name: str
    author_email: str
    timestamp: str  # ISO 8601 author date


def commits_between(repo: Path, old: str | None, new: str, *, limit: int = 100) -> list[CommitInfo]:
    """Commits reachable from ``new`` and not from ``old`` (newest last), at most ``limit``."""
    rng = [check_rev(new)] if old is None else [f"{check_rev(old)}..{check_rev(new)}"]
    out = cmd.run(
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


# --- differences -------------------------------------------------------------------


@dataclass(frozen=True)
class DiffStat:
    """Size of a change: counts and the changed paths (new name for renames)."""

    files: int
    insertions: int
    deletions: int
    paths: list[str]


def diffstat(repo: Path, base: str, head: str) -> DiffStat:
    """Files, insertions and deletions between ``base`` and ``head`` (binary files count 0)."""
    out = cmd.run(
        [
            "diff",
            "--numstat",
            "-z",
            "--no-ext-diff",
            "--end-of-options",
            check_rev(base),
            check_rev(head),
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
    """:class:`BranchStats` in two git processes (none when ``head`` is ``base``; one when
    ``head`` is a commit whose only parent is ``base``, read from its loose object: the
    daemon's commit of an agent's leftovers)."""
    if base == head and is_full_sha(base):
        return BranchStats(0, True, DiffStat(files=0, insertions=0, deletions=0, paths=[]))
    if is_full_sha(base) and is_full_sha(head) and dotgit.commit_parents(repo, head) == [base]:
        return BranchStats(1, True, diffstat(repo, base, head))
    out = cmd.run(
        ["rev-list", "--left-right", "--count", "--end-of-options",
         f"{check_rev(base)}...{check_rev(head)}"],
        repo,
    ).stdout.split()  # fmt: skip
    behind, ahead = int(out[0]), int(out[1])
    # base is an ancestor of head exactly when no commit of base is missing from head.
    return BranchStats(ahead, behind == 0, diffstat(repo, base, head))


def diff(repo: Path, base: str, head: str, *, stat: bool = False) -> str:
    """``git diff base head``: the full patch, or the ``--stat`` summary."""
    # The user's diff settings do not change what a reader parses: a/ and b/ prefixes
    # always (diff.noprefix, diff.mnemonicPrefix), UTF-8 names unquoted.
    args = ["-c", "core.quotepath=off", "diff", "--no-color", "--no-ext-diff",
            "--src-prefix=a/", "--dst-prefix=b/"] + (["--stat"] if stat else [])  # fmt: skip
    args += ["--end-of-options", check_rev(base), check_rev(head), "--"]
    return cmd.run(args, repo).stdout


def changed_paths(repo: Path, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (renames reported under both names)."""
    out = cmd.run(
        ["diff", "--name-only", "-z", "--no-renames", "--end-of-options",
         check_rev(old), check_rev(new), "--"],
        repo,
    ).stdout  # fmt: skip
    return sorted({p for p in out.split("\0") if p})


def changed_gitlinks(repo: Path, commit: str) -> list[str]:
    """Paths where ``commit`` adds or moves a gitlink (a nested repository or submodule).

    A snapshot records such a path only as a commit id, not its files: before
    removing a worktree whose snapshot has any, keep the directory instead.
    """
    sha = rev_parse(repo, commit)
    out = cmd.run(
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
