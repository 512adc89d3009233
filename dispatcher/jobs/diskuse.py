"""The disk used by each repo's job worktrees, measured off the request path.

Walking every file of every retained worktree took 1.44 s per ``GET /repos`` at
300 retained 1,000-file trees. So one background thread (``disk-use``) measures,
and the API reads the last figure with the time it was measured
(``worktrees_measured_at``):

* a full pass over ``<worktrees>/<repo>/*`` at start, then every
  ``disk_use_refresh_minutes`` (files added by hand, a running agent's writes, the
  sweeper's removals);
* between passes, when the daemon changes a repo's trees: a job ends (its tree is
  measured again: the agent's files), a job's tree is released or removed, a repo is
  registered or removed (the repo's trees are listed again: a new tree is measured, a
  gone one dropped). Changes that come together (a burst of jobs ending) settle for
  half a second and are measured once.

A repo's figure is the sum of its trees', each measured on its own, so a job that ends
costs the walk of its own tree, not of every retained one. Its time is the oldest
measurement in the sum. Until the first pass has listed a repo, its figure is None
("measuring").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.store.models import utcnow

log = logging.getLogger(__name__)

SETTLE_S = 0.5  # changes that come together are measured once


def dir_size(path: Path) -> int:
    """Bytes in the files under ``path`` (apparent size; symlinks not followed).

    Files and directories that vanish or cannot be read mid-walk are skipped;
    a file with several hard links inside ``path`` counts once.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        except OSError:  # vanished, not a directory, or unreadable
            continue
    return total


@dataclass(frozen=True)
class Figure:
    """Bytes in a repo's job worktrees, as of ``measured_at`` (the oldest part of it)."""

    bytes: int
    measured_at: datetime


@dataclass
class _Trees:
    """One repo's trees (entries of ``<worktrees>/<repo>``): name -> (bytes, measured at)."""

    listed_at: datetime
    parts: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def figure(self) -> Figure:
        times = [self.listed_at, *(at for _, at in self.parts.values())]
        return Figure(sum(size for size, _ in self.parts.values()), min(times))


def _entry_size(path: Path) -> int:
    """Bytes under ``path`` (a tree), or of ``path`` itself (a stray file); 0 if gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            return dir_size(path)
        return path.lstat().st_size
    except OSError:
        return 0


def _names(directory: Path) -> set[str] | None:
    """The entries of ``directory``; None if it does not exist (or cannot be read)."""
    try:
        return set(os.listdir(directory))
    except OSError:
        return None


class DiskUse:
    """Each repo's worktree bytes, kept by one background thread (:meth:`start`)."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.root = settings.worktrees_dir
        self.interval_s = settings.disk_use_refresh_minutes * 60
        self._clock = clock
        self._lock = threading.Lock()
        self._repos: dict[str, _Trees] = {}
        self._passed_at: datetime | None = None  # the last full pass's listing of the root
        self._dirty: dict[str, set[str]] = {}  # repo -> trees to measure again (and: list it)
        self._ended: set[int] = set()  # jobs ended, their repo not looked up yet
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ reading

    def figure(self, repo_name: str) -> Figure | None:
        """The repo's last figure; None before the first pass has listed it."""
        with self._lock:
            trees = self._repos.get(repo_name)
            if trees is not None:
                return trees.figure()
            if self._passed_at is not None:  # it had no directory then: no trees
                return Figure(0, self._passed_at)
            return None

    # ------------------------------------------------------------ told of changes

    def touch(self, repo_name: str, tree: str | None = None) -> None:
        """The repo's trees changed (list them again), and ``tree`` (a name in
        ``<worktrees>/<repo>``) changed inside: measure it again. Returns at once."""
        with self._lock:
            trees = self._dirty.setdefault(repo_name, set())
            if tree is not None:
                trees.add(tree)
        self._wake.set()

    def job_ended(self, job_id: int) -> None:
        """Job ``job_id`` ended: its tree (``<worktrees>/<repo>/<job id>``) is measured
        again. Returns at once (the runner's hook); the repo is found in the background."""
        with self._lock:
            self._ended.add(job_id)
        self._wake.set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="disk-use", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_pass = time.monotonic()
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_pass:
                    self.full_pass()
                    next_pass = time.monotonic() + self.interval_s
                elif self._pending():
                    if not self._stopping.wait(SETTLE_S):
                        self.measure_changes()
                else:
                    self._wake.wait(max(0.0, next_pass - time.monotonic()))
                    self._wake.clear()
            except Exception:  # a figure never stops the daemon; the next pass tries again
                log.exception("measuring the worktrees' disk use failed")
                self._stopping.wait(SETTLE_S)

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._dirty or self._ended)

    # ------------------------------------------------------------ measuring

    def full_pass(self) -> None:
        """Measure every tree of every repo (the repos: the root's directories)."""
        with self._lock:
            self._dirty.clear()  # a change made from here on is measured after the pass
            self._ended.clear()
        listed_at = self._clock()
        names = _names(self.root) or set()
        fresh: dict[str, _Trees] = {}
        for name in sorted(names):
            if self._stopping.is_set():
                return
            fresh[name] = self._measure(name, None)
        with self._lock:
            self._repos = fresh
            self._passed_at = listed_at

    def measure_changes(self) -> None:
        """Measure what :meth:`touch` and :meth:`job_ended` were told of since."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            ended, self._ended = self._ended, set()
        for job_id in ended:
            repo = self._repo_of(str(job_id))
            if repo is not None:
                dirty.setdefault(repo, set()).add(str(job_id))
        for repo, trees in sorted(dirty.items()):
            measured = self._measure(repo, trees)
            with self._lock:
                self._repos[repo] = measured

    def _repo_of(self, tree: str) -> str | None:
        """The repo whose directory holds the tree named ``tree`` (a job id: unique)."""
        with self._lock:
            known = [repo for repo, trees in self._repos.items() if tree in trees.parts]
        if known:
            return known[0]
        for repo in sorted(_names(self.root) or ()):
            if os.path.lexists(self.root / repo / tree):
                return repo
        return None

    def _measure(self, repo: str, changed: set[str] | None) -> _Trees:
        """The repo's trees listed again: the ``changed`` ones (None: all) and new ones
        measured, the others' figures kept, gone ones dropped."""
        directory = self.root / repo
        listed_at = self._clock()
        names = _names(directory) or set()
        with self._lock:
            old = self._repos.get(repo)
            kept = dict(old.parts) if old is not None else {}
        trees = _Trees(listed_at)
        for name in sorted(names):
            if changed is None or name in changed or name not in kept:
                measured_at = self._clock()
                trees.parts[name] = (_entry_size(directory / name), measured_at)
            else:
                trees.parts[name] = kept[name]
        return trees
