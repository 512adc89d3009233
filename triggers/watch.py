"""File-system hints for every registered repo: shared watches, debounced.

Watchdog is only a hint that something may have changed; the callbacks go and
look (``on_refs`` rescans the refs with git, see :mod:`triggers.refs`). A
periodic poll calls ``on_refs`` for every repo anyway, so a missed or
overflowed inotify queue loses nothing.

Per repo:

- refs: the repo's common git dir (not recursively: ``packed-refs`` and its
  lock) and its ``refs/`` and ``reftable/`` dirs (recursively). Only paths
  under ``refs/heads/``, ``packed-refs*`` and ``reftable/`` count, and not the
  daemon's own job branches (``refs/heads/dispatcher/...``, which never make
  events): a job's commits do not wake the watcher. Objects, logs, the index
  and worktree admin files are not even watched.
- files (when asked): the work tree, recursively, except every ``.git``
  directory in it (not watched at all, so the daemon's git writes there are
  never read; a ``.git`` path that still shows up is ignored); paths are
  reported relative to the repo root, in posix form. Worktrees live under the
  daemon's state dir, outside repos, and are never watched: a checkout floods
  tens of thousands of events.

All repos share one set of watches (:mod:`triggers.watches`): on Linux one
inotify descriptor and one reading thread, whatever the number of repos.

Events are debounced per repo (:class:`Debouncer`) and delivered on one
background thread, which sleeps on a :class:`threading.Event` until the next
deadline or the next file-system event. An exception in a callback is logged
and never stops the thread. The callbacks must not block for long: they
delay every other repo's callbacks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Generic, TypeVar

from triggers.refs import JOB_BRANCH_PREFIX, is_job_branch
from triggers.watches import Watches, open_watches

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", bound=Hashable)

Clock = Callable[[], float]

# --- debouncing (pure) ------------------------------------------------------------


@dataclass
class _Pending(Generic[T]):
    first: float
    last: float
    items: dict[T, None] = field(default_factory=dict)  # an ordered set


class Debouncer(Generic[K, T]):
    """Per-key quiet periods, with the time passed in.

    :meth:`touch` records activity on a key (optionally with an item, e.g. a
    path); :meth:`due` hands back each key that has been quiet for ``quiet``
    seconds, or that has been waiting ``max_wait`` seconds since its first
    touch although still busy, with its items (deduplicated, first seen first).
    ``max_wait`` defaults to ten times the key's quiet period and is never
    shorter than it. Not thread-safe: the caller locks.
    """

    def __init__(self, quiet: float, *, max_wait: float | None = None) -> None:
        if quiet < 0 or (max_wait is not None and max_wait < 0):
            raise ValueError("quiet and max_wait must not be negative")
        self.quiet = quiet
        self.max_wait = max_wait
        self._quiet: dict[K, float] = {}
        self._pending: dict[K, _Pending[T]] = {}

    def set_quiet(self, key: K, seconds: float | None) -> None:
        """Use ``seconds`` as ``key``'s quiet period (None: back to the default)."""
        if seconds is None:
            self._quiet.pop(key, None)
        elif seconds < 0:
            raise ValueError("quiet must not be negative")
        else:
            self._quiet[key] = seconds

    def quiet_for(self, key: K) -> float:
        return self._quiet.get(key, self.quiet)

    def max_wait_for(self, key: K) -> float:
        quiet = self.quiet_for(key)
        return 10 * quiet if self.max_wait is None else max(self.max_wait, quiet)

    def touch(self, key: K, now: float, *, item: T | None = None) -> None:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(first=now, last=now)
        else:
            pending.last = max(pending.last, now)
        if item is not None:
            pending.items.setdefault(item, None)

    def due(self, now: float) -> list[tuple[K, list[T]]]:
        """Remove and return the keys that are due at ``now``, in order of first touch."""
        ready: list[tuple[K, list[T]]] = []
        for key, pending in list(self._pending.items()):
            if now >= self._deadline(key, pending):
                del self._pending[key]
                ready.append((key, list(pending.items)))
        return ready

    def next_deadline(self) -> float | None:
        """The earliest time a pending key becomes due; None if nothing is pending."""
        return min((self._deadline(k, p) for k, p in self._pending.items()), default=None)

    def discard(self, key: K) -> None:
        """Forget ``key``'s pending activity (its override of ``quiet`` stays)."""
        self._pending.pop(key, None)

    def forget(self, key: K) -> None:
        """Forget everything about ``key``."""
        self._pending.pop(key, None)
        self._quiet.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def _deadline(self, key: K, pending: _Pending[T]) -> float:
        return min(pending.last + self.quiet_for(key), pending.first + self.max_wait_for(key))


# --- the watcher ------------------------------------------------------------------


@dataclass
class _Repo:
    name: str
    path: Path  # the work tree's top, absolute
    git_dir: Path  # the common git dir, absolute
    files: bool
    watches: list[object] = field(default_factory=list)  # handles of the shared watches


class RepoWatcher:
    """Watches the refs (and optionally the files) of many repos at a constant thread count.

    ``on_refs(repo_name)`` is called ``ref_quiet`` seconds after the repo's
    branches last changed on disk, and for every watched repo each
    ``poll_interval`` seconds regardless (None or 0 disables the poll).
    ``on_files(repo_name, paths)`` is called ``file_quiet`` seconds after the
    last change in a work tree watched with ``files=True``. ``git_dir(path)``
    gives the common git dir of the work tree at ``path`` (the caller's git). Busy keys still
    fire after ``ref_max_wait`` / ``file_max_wait``. Callbacks run on the
    watcher's thread, one at a time. ``watches`` makes the shared watches at
    :meth:`start` (default: :func:`~triggers.watches.open_watches`).

    :meth:`watch` and :meth:`unwatch` may be called before :meth:`start` and
    while running; :meth:`stop` is final. Once :meth:`unwatch` returns, that
    repo's callbacks stop (one already being delivered may still finish).
    """

    def __init__(
        self,
        on_refs: Callable[[str], None],
        on_files: Callable[[str, list[str]], None],
        *,
        git_dir: Callable[[Path], Path],
        ref_quiet: float = 0.2,
        file_quiet: float = 2.0,
        ref_max_wait: float = 2.0,
        file_max_wait: float = 30.0,
        poll_interval: float | None = 30.0,
        clock: Clock = time.monotonic,
        watches: Callable[[], Watches] = open_watches,
    ) -> None:
        self._on_refs = on_refs
        self._on_files = on_files
        self._git_dir = git_dir
        self._clock = clock
        self._poll_interval = poll_interval or None
        self._open_watches = watches
        # _lock guards the debouncers, _repos and the flags; it is never held while
        # calling into the watches (whose reading thread calls our sinks, which take
        # _lock) nor while running callbacks.
        self._lock = threading.Lock()
        self._admin = threading.Lock()  # serializes watch/unwatch/start/stop
        self._wake = threading.Event()
        self._refs: Debouncer[str, str] = Debouncer(ref_quiet, max_wait=ref_max_wait)
        self._files: Debouncer[str, str] = Debouncer(file_quiet, max_wait=file_max_wait)
        self._repos: dict[str, _Repo] = {}
        self._watches: Watches | None = None
        self._thread: threading.Thread | None = None
        self._next_poll: float | None = None
        self._started = False
        self._stopping = False

    # --- public API ---

    def watch(self, repo_name: str, repo_path: Path, *, files: bool) -> None:
        """Watch ``repo_path``'s refs (and its work tree if ``files``) as ``repo_name``.

        Idempotent; calling it again with another path or ``files`` updates the watch.
        Raises what ``git_dir`` raises if ``repo_path`` is not a git repository (the
        daemon's raises InvalidInput), OSError if the system refuses more watches.
        """
        path = Path(os.path.abspath(repo_path))
        git_dir = self._git_dir(path)
        with self._admin:
            old = self._repos.get(repo_name)
            if old is not None and (old.path, old.git_dir, old.files) == (path, git_dir, files):
                return
            repo = _Repo(repo_name, path, git_dir, files)
            if self._watches is not None:
                self._schedule(self._watches, repo)
            with self._lock:
                self._repos[repo_name] = repo
                if not files:
                    self._files.discard(repo_name)
            if old is not None:
                self._release(old)

    def unwatch(self, repo_name: str) -> None:
        """Stop watching ``repo_name`` (no error if it was not watched)."""
        with self._admin:
            with self._lock:
                repo = self._repos.pop(repo_name, None)
                self._refs.forget(repo_name)
                self._files.forget(repo_name)
            if repo is not None:
                self._release(repo)

    def set_file_quiet(self, repo_name: str, seconds: float) -> None:
        """Debounce ``repo_name``'s file changes by ``seconds`` (e.g. from its trigger file)."""
        with self._lock:
            self._files.set_quiet(repo_name, seconds)
        self._wake.set()

    def start(self) -> None:
        """Open the shared watches, watch every repo and start the delivery thread (once).

        A repo whose directory cannot be watched (gone since it was registered) is logged
        and left to the poll; the others are watched."""
        with self._admin:
            if self._stopping:
                raise RuntimeError("a stopped RepoWatcher cannot be restarted")
            if self._started:
                return
            self._started = True
            _silence_watchdog_race()
            watches = self._open_watches()
            for repo in list(self._repos.values()):
                try:
                    self._schedule(watches, repo)
                except OSError as exc:
                    logger.warning("repo %s: cannot watch %s: %s", repo.name, repo.path, exc)
            self._watches = watches
            if self._poll_interval is not None:
                self._next_poll = self._clock() + self._poll_interval
            self._thread = threading.Thread(target=self._run, name="dispatcher-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop delivering callbacks and release every watch. Idempotent."""
        with self._admin:
            with self._lock:
                self._stopping = True
            self._wake.set()
            thread, self._thread = self._thread, None
            watches, self._watches = self._watches, None
            for repo in self._repos.values():
                repo.watches.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if watches is not None:
            watches.close(timeout)

    def __enter__(self) -> RepoWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the watches' side ---

    def _schedule(self, watches: Watches, repo: _Repo) -> None:
        """Add ``repo``'s watches; all or none."""
        targets: list[tuple[Path, bool, Callable[[list[str], bool], None]]] = []
        refs = _RefsSink(self, repo)
        targets.append((repo.git_dir, False, refs))
        for sub in ("refs", "reftable"):
            if (repo.git_dir / sub).is_dir():
                targets.append((repo.git_dir / sub, True, refs))
        if repo.files:
            targets.append((repo.path, True, _FilesSink(self, repo)))
        try:
            for where, recursive, sink in targets:
                skip = frozenset({".git"}) if sink is not refs else frozenset()
                repo.watches.append(watches.add(where, recursive=recursive, sink=sink, skip=skip))
        except BaseException:
            self._release(repo, watches)
            raise

    def _release(self, repo: _Repo, watches: Watches | None = None) -> None:
        watches = watches or self._watches
        handles, repo.watches = repo.watches, []
        if watches is not None:
            for handle in handles:
                watches.remove(handle)

    def _touch_refs(self, repo: _Repo) -> None:
        with self._lock:
            if self._repos.get(repo.name) is not repo:
                return  # an event for a replaced or removed watch
            self._refs.touch(repo.name, self._clock())
        self._wake.set()

    def _touch_files(self, repo: _Repo, paths: list[str]) -> None:
        with self._lock:
            if self._repos.get(repo.name) is not repo:
                return
            now = self._clock()
            for path in paths:
                self._files.touch(repo.name, now, item=path)
        self._wake.set()

    # --- the delivery thread ---

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = self._clock()
                refs = [name for name, _ in self._refs.due(now)]
                files = self._files.due(now)
                if self._next_poll is not None and now >= self._next_poll:
                    assert self._poll_interval is not None
                    self._next_poll = now + self._poll_interval
                    for name in self._repos:
                        self._refs.discard(name)
                    refs = list(self._repos)
                timeout = self._timeout(now)
                self._wake.clear()  # a touch after this sets it again
            if refs or files:
                self._deliver(refs, files)
                continue  # the callbacks took time: look again before sleeping
            self._wake.wait(timeout)

    def _timeout(self, now: float) -> float | None:
        deadlines = [self._refs.next_deadline(), self._files.next_deadline(), self._next_poll]
        soonest = min((d for d in deadlines if d is not None), default=None)
        return None if soonest is None else max(soonest - now, 0.0)

    def _deliver(self, refs: list[str], files: list[tuple[str, list[str]]]) -> None:
        for name in refs:
            if self._still_watched(name, files=False):
                self._call(self._on_refs, name)
        for name, paths in files:
            if paths and self._still_watched(name, files=True):
                self._call(self._on_files, name, paths)

    def _still_watched(self, name: str, *, files: bool) -> bool:
        with self._lock:
            repo = self._repos.get(name)
            return not self._stopping and repo is not None and (repo.files or not files)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("watch callback %r failed for %r", callback, args[0])


def _silence_watchdog_race() -> None:
    """Ignore watchdog's warning about a directory watched twice.

    When directories are created quickly under a recursive watch (``mkdir -p``),
    watchdog may add the same directory twice; it keeps one callback and warns
    with a RuntimeWarning. That is harmless, but where warnings are errors
    (``-W error``, the test suite) the warning is raised in watchdog's reader
    thread, which dies and silently takes every watch with it.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"Callback with id .* already exists for watch",
        category=RuntimeWarning,
    )


def _relative(path: str, root: Path) -> PurePath | None:
    try:
        return PurePath(path).relative_to(root)
    except ValueError:
        return None


class _RefsSink:
    """Touches the repo's ref debouncer for changes to branches or packed refs (the
    daemon's own job branches excepted: they never make events)."""

    def __init__(self, watcher: RepoWatcher, repo: _Repo) -> None:
        self._watcher = watcher
        self._repo = repo

    def __call__(self, paths: list[str], is_directory: bool) -> None:
        if any(_is_ref_path(_relative(p, self._repo.git_dir), is_directory) for p in paths):
            self._watcher._touch_refs(self._repo)


def _is_ref_path(rel: PurePath | None, is_directory: bool = False) -> bool:
    """A change below the git dir that may have moved a branch: not the daemon's own job
    branches, nor the directory that holds them (git makes and removes it as the first
    comes and the last goes: no branch of the user's moves with it)."""
    if rel is None or not rel.parts:
        return False
    parts = rel.parts
    if len(parts) > 3 and is_job_branch(rel.as_posix()):
        return False
    if is_directory and rel.as_posix() + "/" == JOB_BRANCH_PREFIX:
        return False
    return (
        parts[0].startswith("packed-refs")
        or parts[0] == "reftable"
        or (parts[0] == "refs" and (len(parts) == 1 or parts[1] == "heads"))
    )


class _FilesSink:
    """Collects changed work-tree files (relative, posix) outside any ``.git``."""

    def __init__(self, watcher: RepoWatcher, repo: _Repo) -> None:
        self._watcher = watcher
        self._repo = repo

    def __call__(self, paths: list[str], is_directory: bool) -> None:
        if is_directory:
            return
        found = []
        for path in paths:
            rel = _relative(path, self._repo.path)
            if rel is not None and rel.parts and ".git" not in rel.parts:
                found.append(rel.as_posix())
        if found:
            self._watcher._touch_files(self._repo, found)
