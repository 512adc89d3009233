"""``fetch: true``: a repo's remote fetched before a job's base is resolved (docs/forge.md).

At most one fetch per repo is in flight; a job that asks while one runs waits for it,
and one that asks within ``DISPATCHER_FETCH_COALESCE_SECONDS`` of a fetch's start
shares it (:func:`shares`), so a burst of jobs costs one fetch. The ask is timed when
the request arrives: the intake fetches for an event before it takes its submit lock
(:mod:`dispatcher.events.intake`) and the submit then shares that fetch, so a remote
that hangs holds up only its own repo's events, never another repo's. A fetch that fails
(unreachable, refused, timed out after ``DISPATCHER_FETCH_TIMEOUT_SECONDS``) is one
line for the job's log and the job goes on from the local ref: never a stuck job.
The base then is ``<remote>/<branch>`` when the local branch is behind it (an
ancestor), else the local branch (it has commits of its own, or no tracking ref).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.git import refs
from dispatcher.git import remote as git_remote
from dispatcher.store.models import Repo

log = logging.getLogger(__name__)


def shares(started: float | None, asked: float, window: float) -> bool:
    """Whether a job that asked at ``asked`` uses the fetch that started at ``started``
    (None: none yet) instead of starting one: it started at most ``window`` seconds
    before the ask, or after it (the job waited for it)."""
    return started is not None and started >= asked - window


@dataclass
class _RepoFetch:
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float | None = None
    error: str | None = None  # the last fetch's failure, one line (None: it worked)
    count: int = 0  # fetches run (tests and the log)


@dataclass(eq=False)
class Fetches:
    """The fetches of ``fetch: true`` repos, one in flight per repo, bursts coalesced."""

    settings: Settings
    credentials: Callable[[str], git_remote.Credentials | None]  # Forges' for a URL
    scrub: Callable[[str], str] = str  # tokens out of a message
    clock: Callable[[], float] = time.monotonic
    _repos: dict[int, _RepoFetch] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def now(self) -> float:
        """The clock a caller records its ask on (``asked`` of :meth:`fetch`)."""
        return self.clock()

    def fetch(self, repo: Repo, asked: float | None = None) -> str | None:
        """Fetch the repo's remote if it asks (``fetch: true``); None when it worked or
        was not asked, else the one-line reason it failed. Never raises. ``asked``: when
        the caller's request arrived (:meth:`now`; default: now), so that a request that
        waited (for this fetch, or for the intake) shares the fetch that ran meanwhile."""
        if not repo.fetch or repo.id is None:
            return None
        with self._guard:
            state = self._repos.setdefault(repo.id, _RepoFetch())
        if asked is None:
            asked = self.clock()
        with state.lock:
            if shares(state.started, asked, self.settings.fetch_coalesce_seconds):
                return state.error
            state.started = self.clock()
            state.error = self._fetch(repo)
            state.count += 1
            return state.error

    def fetched(self, repo_id: int) -> int:
        """How many fetches of the repo this daemon ran."""
        with self._guard:
            state = self._repos.get(repo_id)
        return state.count if state is not None else 0

    def _fetch(self, repo: Repo) -> str | None:
        remote = repo.fetch_remote or "origin"
        path = Path(repo.path)
        try:
            fetch_url, _ = git_remote.remote_urls(path, remote)
            git_remote.fetch(
                path, remote, credentials=self.credentials(fetch_url),
                timeout=self.settings.fetch_timeout_seconds,
            )  # fmt: skip
        except DispatcherError as exc:
            message = self.scrub(exc.message)
            log.warning("repo %s: %s", repo.name, message)
            return message
        except Exception as exc:  # never a stuck or failed job for a fetch
            log.exception("repo %s: fetch of %s failed", repo.name, remote)
            return f"fetch of {remote} failed: {type(exc).__name__}"
        return None

    def base(self, repo: Repo, base_ref: str, asked: float | None = None) -> tuple[str, str | None]:
        """The commit a job of ``repo`` starts from for ``base_ref``, and a line for its
        log (None: nothing to say). ``fetch: true``: fetched first (``asked``: see
        :meth:`fetch`); a branch behind its remote-tracking ref starts from that ref."""
        path = Path(repo.path)
        failed = self.fetch(repo, asked)
        sha = refs.rev_parse(path, base_ref)
        if not repo.fetch:
            return sha, None
        remote = repo.fetch_remote or "origin"
        if failed is not None:
            return sha, f"{failed}; the job starts from the local {base_ref} ({sha[:12]})"
        if not refs.is_branch(path, base_ref):
            return sha, None
        newer = git_remote.newer_tracking(path, remote, base_ref)
        if newer is None:
            return sha, f"fetched {remote}: the job starts from {base_ref} ({sha[:12]})"
        return newer, (
            f"fetched {remote}: the job starts from {remote}/{base_ref} ({newer[:12]}); the "
            f"local {base_ref} is behind it"
        )

    def tip(self, repo: Repo, branch: str) -> tuple[str | None, str | None]:
        """The tip of target ``branch`` a rebase goes onto (None: no such branch), and a
        line about the fetch (None: none asked)."""
        path = Path(repo.path)
        failed = self.fetch(repo)
        local = refs.branch_head(path, branch)
        if not repo.fetch or local is None:
            return local, None
        if failed is not None:
            return local, f"{failed}; rebased onto the local {branch}"
        remote = repo.fetch_remote or "origin"
        newer = git_remote.newer_tracking(path, remote, branch)
        if newer is None:
            return local, None
        return newer, f"onto {remote}/{branch}, ahead of the local {branch}"
