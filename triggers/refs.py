"""Local ref changes → ``push`` and ``pull_request`` events.

Git is the truth and watchdog only a hint: whatever woke us (a file event, the
periodic poll, the daemon starting), we take a :func:`snapshot` of the
branches with ``git for-each-ref`` (loose and packed refs alike) and compare
it with the last snapshot the daemon stored (:func:`diff_refs`). So missed
file events and daemon downtime lose nothing, and catching up never makes a
second event for the same move: an event's ``dedup_key`` is a function of
(repo, kind, action, ref, before, after) only.

What a change becomes (refs in name order, for each one ``push`` first):

- a branch moved: ``push`` (``forced`` when the old tip is not an ancestor of
  the new one) and, unless it is the default branch, ``pull_request``
  ``synchronize``;
- a new branch: ``push`` with ``created`` and ``before`` = 40 zeros and,
  unless it is the default branch, ``pull_request`` ``opened``;
- a deleted branch: nothing.

The daemon's own job branches (:data:`JOB_BRANCH_PREFIX`) never produce
events; otherwise an agent's commits would trigger agents.

Paths: a ``push`` carries the paths changed between the old and the new tip
(a new branch: since its merge base with the default branch). A
``pull_request`` carries the whole pull request's paths (merge base with the
default branch → head), as GitHub Actions' ``paths`` filters see them. A
branch with no history in common with the default branch reports every file
of its tip, at most :data:`MAX_PATHS` of them.

Git itself is asked through a :class:`RefReader` the caller passes in (the
events layer gives :mod:`dispatcher.git.refs`), so this package never imports
the git package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dispatcher.errors import NotFound
from triggers.events import Event

JOB_BRANCH_PREFIX = "refs/heads/dispatcher/"
HEADS = "refs/heads/"
ZERO_SHA = "0" * 40
MAX_COMMITS = 100  # commits listed in a push payload (the newest ones)
MAX_PATHS = 1000  # paths reported for a branch with no history in common with the default

# The empty tree, for "every file of a commit" as a diff (git knows it without storing it).
_EMPTY_TREE = {
    40: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    64: "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}
_MAX_KEY = 300  # Event.dedup_key's limit
_SENDER = {"login": "local"}


class Commit(Protocol):
    """One commit as a push event describes it."""

    @property
    def sha(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def author_name(self) -> str: ...
    @property
    def author_email(self) -> str: ...
    @property
    def timestamp(self) -> str:  # ISO 8601 author date
        ...


class RefReader(Protocol):
    """The questions this module asks git about a repository (revisions are shas or names)."""

    def for_each_ref(self, repo: Path, prefix: str) -> dict[str, str]:
        """``{refname: sha}`` for every ref under ``prefix``."""
        ...

    def rev_parse(self, repo: Path, rev: str) -> str:
        """The sha of the commit ``rev`` names; NotFound if there is none."""
        ...

    def is_ancestor(self, repo: Path, ancestor: str, descendant: str) -> bool:
        """True if ``ancestor`` is reachable from ``descendant``."""
        ...

    def merge_base(self, repo: Path, a: str, b: str) -> str | None:
        """The best common ancestor of ``a`` and ``b``; None when they share no history."""
        ...

    def commits_between(
        self, repo: Path, old: str | None, new: str, *, limit: int
    ) -> Sequence[Commit]:
        """Commits reachable from ``new`` and not from ``old``, oldest first, at most ``limit``."""
        ...

    def changed_paths(self, repo: Path, old: str, new: str) -> list[str]:
        """Paths that differ between two commits."""
        ...


def is_job_branch(ref: str) -> bool:
    """True for the daemon's own job branches (``refs/heads/dispatcher/...``)."""
    return ref.startswith(JOB_BRANCH_PREFIX)


def snapshot(git: RefReader, repo_path: Path) -> dict[str, str]:
    """``{"refs/heads/x": sha}`` for every branch except the daemon's job branches."""
    refs = git.for_each_ref(repo_path, HEADS)
    return {ref: sha for ref, sha in refs.items() if not is_job_branch(ref)}


def scan(
    git: RefReader,
    *,
    repo_path: Path,
    repo_name: str,
    default_branch: str,
    last_seen: Mapping[str, str],
) -> tuple[list[Event], dict[str, str]]:
    """The events since ``last_seen`` and the new snapshot to store once they are stored.

    An empty ``last_seen`` means the repo is seen for the first time: no events,
    only the baseline (a registered repo's existing branches are not news). The
    caller persists the returned snapshot only after storing the events; a
    crash in between re-emits them on the next scan, and their dedup keys make
    that harmless.
    """
    new = snapshot(git, repo_path)
    if not last_seen:
        return [], new
    events = diff_refs(
        git,
        repo_path=repo_path,
        repo_name=repo_name,
        default_branch=default_branch,
        old=last_seen,
        new=new,
    )
    return events, new


def diff_refs(
    git: RefReader,
    *,
    repo_path: Path,
    repo_name: str,
    default_branch: str,
    old: Mapping[str, str],
    new: Mapping[str, str],
) -> list[Event]:
    """Events for the branches that moved or appeared between two snapshots, by ref name."""
    default_tip = new.get(HEADS + default_branch)
    events: list[Event] = []
    for ref in sorted(new):
        after = new[ref]
        before = old.get(ref)
        if before == after or is_job_branch(ref) or not ref.startswith(HEADS):
            continue
        change = _describe(git, repo_path, ref, before, after, default_branch, default_tip)
        ctx = _Context(repo_name, default_branch, default_tip, ref, change)
        events.append(_push_event(ctx))
        if change.branch != default_branch:
            events.append(_pull_request_event(git, ctx, repo_path))
    return events


# --- one ref's change -----------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    branch: str
    before: str  # ZERO_SHA for a new branch
    after: str
    created: bool
    forced: bool
    base: str | None  # what the commits and paths are counted from; None: all of after
    commits: Sequence[Commit]  # base..after, oldest first, the newest MAX_COMMITS
    head: Commit  # the newest commit (after's)
    paths: list[str]


@dataclass(frozen=True)
class _Context:
    repo_name: str
    default_branch: str
    default_tip: str | None
    ref: str
    change: _Change


def _describe(
    git: RefReader,
    repo: Path,
    ref: str,
    before: str | None,
    after: str,
    default_branch: str,
    default_tip: str | None,
) -> _Change:
    branch = ref.removeprefix(HEADS)
    created = before is None
    forced = False
    base: str | None
    if before is not None and _exists(git, repo, before):
        forced = not git.is_ancestor(repo, before, after)
        base = before
    else:
        # A new branch, or the old tip is gone (force-pushed, then garbage-collected).
        forced = before is not None
        base = _fork_point(git, repo, branch, after, default_branch, default_tip)
    commits = git.commits_between(repo, base, after, limit=MAX_COMMITS)
    head = (
        commits[-1]
        if commits and commits[-1].sha == after
        else git.commits_between(repo, None, after, limit=1)[0]
    )
    return _Change(
        branch=branch,
        before=before or ZERO_SHA,
        after=after,
        created=created,
        forced=forced,
        base=base,
        commits=commits,
        head=head,
        paths=_paths(git, repo, base, after),
    )


def _exists(git: RefReader, repo: Path, sha: str) -> bool:
    try:
        git.rev_parse(repo, sha)
    except NotFound:
        return False
    return True


def _fork_point(
    git: RefReader,
    repo: Path,
    branch: str,
    after: str,
    default_branch: str,
    default_tip: str | None,
) -> str | None:
    """Where a branch left the default branch; None for the default branch or no common history."""
    if branch == default_branch or default_tip is None:
        return None
    return git.merge_base(repo, default_tip, after)


def _paths(git: RefReader, repo: Path, base: str | None, after: str) -> list[str]:
    if base is not None:
        return git.changed_paths(repo, base, after)
    empty = _EMPTY_TREE.get(len(after), _EMPTY_TREE[40])
    return git.changed_paths(repo, empty, after)[:MAX_PATHS]


# --- events -----------------------------------------------------------------------


def dedup_key(repo_name: str, kind: str, ref: str, before: str, after: str) -> str:
    """``local:{repo}:{kind}:{ref}:{before}:{after}``; hashed when longer than an Event allows.

    ``kind`` is ``push`` or ``pull_request.<action>``.
    """
    key = f"local:{repo_name}:{kind}:{ref}:{before}:{after}"
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"local:{repo_name[:120]}:{kind}:sha256:{digest}"


def _repository(ctx: _Context) -> dict[str, Any]:
    return {"name": ctx.repo_name, "full_name": ctx.repo_name, "default_branch": ctx.default_branch}


def _commit_payload(commit: Commit) -> dict[str, Any]:
    return {
        "id": commit.sha,
        "message": commit.message,
        "timestamp": commit.timestamp,
        "author": {"name": commit.author_name, "email": commit.author_email},
    }


def _text(change: _Change) -> str:
    """Commit messages for ``contains`` filters: the new commits, else the head commit."""
    return "\n\n".join(c.message for c in change.commits or [change.head])


def _subject(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else ""


def _push_event(ctx: _Context) -> Event:
    change = ctx.change
    commits = [_commit_payload(c) for c in change.commits]
    payload: dict[str, Any] = {
        "ref": ctx.ref,
        "before": change.before,
        "after": change.after,
        "created": change.created,
        "deleted": False,
        "forced": change.forced,
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
        "repository": _repository(ctx),
        "sender": dict(_SENDER),
    }
    return Event(
        kind="push",
        source="local",
        dedup_key=dedup_key(ctx.repo_name, "push", ctx.ref, change.before, change.after),
        repo=ctx.repo_name,
        payload=payload,
        branch=change.branch,
        sha=change.after,
        before=change.before,
        paths=change.paths,
        author=change.head.author_name,
        text=_text(change),
    )


def _pull_request_event(git: RefReader, ctx: _Context, repo: Path) -> Event:
    change = ctx.change
    action = "opened" if change.created else "synchronize"
    payload: dict[str, Any] = {"action": action, "number": None}
    if not change.created:
        payload["before"] = change.before
        payload["after"] = change.after
    payload["pull_request"] = {
        "title": _subject(change.head.message),
        "head": {"ref": change.branch, "sha": change.after},
        "base": {"ref": ctx.default_branch, "sha": ctx.default_tip},
        "html_url": None,
    }
    payload["repository"] = _repository(ctx)
    payload["sender"] = dict(_SENDER)
    # The whole pull request's paths: from where it left the default branch.
    fork = _fork_point(git, repo, change.branch, change.after, ctx.default_branch, ctx.default_tip)
    paths = change.paths
    if fork is not None and fork != change.base:
        paths = _paths(git, repo, fork, change.after)
    return Event(
        kind="pull_request",
        action=action,
        source="local",
        dedup_key=dedup_key(
            ctx.repo_name, f"pull_request.{action}", ctx.ref, change.before, change.after
        ),
        repo=ctx.repo_name,
        payload=payload,
        branch=ctx.default_branch,
        head_branch=change.branch,
        sha=change.after,
        before=None if change.created else change.before,
        paths=paths,
        author=change.head.author_name,
        text=_text(change),
    )
