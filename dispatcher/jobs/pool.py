"""The warm worktree pool: agents start in milliseconds, whatever the repo's size.

A plain ``git worktree add`` checks out every file (0.3 s for 5,000 files,
tens of seconds for 40,000 on a slow disk). Recycling a checked-out tree to
another commit costs only what differs (PERF.md). So each repo keeps
``pool_size`` idle worktrees under ``<state>/pool/<repo>/``, detached at the
default branch tip:

* **reset on entry**: a tree is reset when it enters the pool, in the background:
  a new checkout is clean; a released or refreshed one is reset (``checkout -f
  --detach`` + ``clean -ffdx``, keeping only the repo's opt-in ``keep:``
  directories). Then an inotify watch (:mod:`dispatcher.git.untouched`) keeps the
  proof that nothing touched it while it is idle.
* **take**: a job moves an idle tree to its own path (``git worktree move``: a
  rename) and puts it on its new branch at its base. An untouched tree at the base
  needs only the branch and HEAD written (one ``update-ref``: no checkout, no
  clean); an untouched tree at another commit is checked out to the base
  (``checkout -f -b``: only the files that differ; no clean, nothing is untracked).
  Any tree not proven untouched (touched while idle, a previous daemon's, no
  inotify) is recycled as before: ``checkout -f -b`` + ``clean -ffdx``. So no file
  of an earlier job survives. The pool refills behind it.
* **release**: a merged, discarded or retired job's tree is moved out of the
  job's path at once (uncommitted edits saved to ``refs/dispatcher/released/<id>``
  first) and reset in the background, back into the pool, or removed when
  the pool is full.
  A retained tree whose retention ran out (the sweeper saved its leftovers to
  ``refs/dispatcher/retained/<id>``) comes back the same way (:meth:`give_back`).
  Released trees come first: a queued checkout that a released tree made
  unneeded is skipped.
* **refresh**: when the default branch moves, idle trees follow it in the
  background, so the next recycle stays cheap.
* **size**: the number of idle trees aimed at (:meth:`target`) follows demand:
  the jobs that took or wanted a tree in the last ``pool_window_seconds``, at
  least the repo's ``pool_size`` and at most ``pool_max``. So a burst teaches
  the pool to hold enough for the next one; after a window with no job it
  shrinks back (:meth:`tick`).

Everything slow happens on ``pool_workers`` background threads per daemon
(released trees before new checkouts); the request and spawn paths only rename
directories and write a branch (recycling a tree only when it was touched). Any
failure falls back to a plain ``git worktree add`` (or removal): the pool is an
optimization, never a correctness dependency.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.git import commits, worktrees
from dispatcher.git.untouched import Untouched
from dispatcher.jobs.leftovers import save_released
from dispatcher.store.models import Repo

log = logging.getLogger(__name__)

# Background work by priority: a released tree is cleaned before any new checkout, so
# that the checkout it makes unneeded is skipped (see _make).
# Checking the trees the last daemon left comes last: only when nothing else waits.
_RELEASED, _OTHER, _CHECKOUT, _LEFTOVER = 0, 1, 2, 3
_STOP = -1


class WorktreePool:
    def __init__(
        self,
        settings: Settings,
        repos: Callable[[], list[Repo]],
        keep_for: Callable[[Repo], list[str]] = lambda repo: [],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.root = settings.state_dir / "pool"
        self._repos = repos
        self._keep_for = keep_for
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[str, list[Path]] = {}  # repo name -> ready trees
        self._busy: dict[str, int] = {}  # repo name -> released trees being cleaned
        self._making: dict[str, int] = {}  # repo name -> checkouts queued or under way
        self._starts: dict[str, deque[float]] = {}  # repo name -> when jobs asked for a tree
        self._work: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()  # first in, first out within a priority
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        # Idle trees the last daemon left, listed at start and not yet checked (see
        # start()); checked at the workers' lowest priority, or by the job taking one.
        self._unchecked: set[Path] = set()
        # Repos unregistered since start, by _identity (SQLite may give a new repo a
        # forgotten one's id: its registration time tells them apart).
        self._forgotten: set[tuple[int | None, object]] = set()
        # The idle trees reset since they entered the pool and the commit of each, while
        # nothing touches them (their take then writes a branch only).
        self._untouched = Untouched()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take over the trees a previous daemon left, then fill up, without delaying start.

        Only directories are listed here (no git): the idle trees found count as idle
        at once, unchecked. The workers check them (:meth:`_adopt`: no reset) at the
        lowest priority (only when no other pool work waits), and remove
        anything else found; a job that takes a tree not checked yet checks it first
        (:meth:`take`). So a restart costs no git process per tree before the daemon
        answers, and the fills below run first."""
        leftovers: list[tuple[Repo, Path]] = []
        for repo in self._repos():
            directory = self.root / repo.name
            found = sorted(directory.iterdir()) if directory.is_dir() else []
            idle = [tree for tree in found if tree.name.startswith("idle-")]
            with self._lock:
                self._idle.setdefault(repo.name, [])[:0] = idle
                self._unchecked.update(idle)
            leftovers.extend((repo, tree) for tree in found)
        for repo, tree in leftovers:
            self._submit(functools.partial(self._check_leftover, repo, tree), _LEFTOVER)
        for repo in self._repos():
            self.fill(repo)
        self._start_threads()  # after everything is queued: the fills come out first

    def _start_threads(self) -> None:
        for n in range(self.settings.pool_workers):
            thread = threading.Thread(target=self._worker, name=f"pool-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        ticker = threading.Thread(target=self._tick_loop, name="pool-tick", daemon=True)
        ticker.start()
        self._threads.append(ticker)

    def stop(self) -> None:
        self._stopped.set()
        for _ in self._threads:
            self._work.put((_STOP, next(self._order), None))
        deadline = time.monotonic() + 10
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._untouched.close()

    def size_for(self, repo: Repo) -> int:
        """The repo's pool size: the fewest idle trees it keeps (0: no pool)."""
        return repo.pool_size if repo.pool_size is not None else self.settings.pool_size

    def cap_for(self, repo: Repo) -> int:
        """The most idle trees the repo's pool grows to: ``pool_max``, never below its size."""
        size = self.size_for(repo)
        return max(size, self.settings.pool_max) if size > 0 else 0

    def target(self, repo: Repo) -> int:
        """How many idle trees the repo's pool aims at now: the jobs that asked for a tree
        in the last ``pool_window_seconds``, between its size and its cap."""
        with self._lock:
            return self._target_locked(repo)

    def _target_locked(self, repo: Repo) -> int:
        """:meth:`target`, under the lock."""
        size = self.size_for(repo)
        if size <= 0:
            return 0
        return max(size, min(self.cap_for(repo), len(self._recent(repo.name))))

    def _recent(self, repo_name: str) -> deque[float]:
        """The repo's job starts within the window (older ones dropped). Under the lock."""
        starts = self._starts.setdefault(repo_name, deque())
        horizon = self._clock() - self.settings.pool_window_seconds
        while starts and starts[0] <= horizon:
            starts.popleft()
        return starts

    def tick(self) -> None:
        """Shrink the pools whose demand fell (the window slid past their jobs): idle
        trees past the target are removed, in the background."""
        with self._lock:
            names = [name for name, idle in self._idle.items() if idle]
        for repo in self._repos():
            if repo.name in names:
                self._trim(repo)

    def _tick_loop(self) -> None:
        period = min(30.0, self.settings.pool_window_seconds / 4)
        while not self._stopped.wait(period):
            try:
                self.tick()
            except Exception:
                log.exception("pool: the periodic shrink failed")

    def _current(self, repo: Repo) -> Repo | None:
        """``repo`` as registered now (its settings); None once it is gone (forgotten, or
        no longer registered): queued work for it then makes nothing and keeps nothing."""
        with self._lock:
            if _identity(repo) in self._forgotten:
                return None
        return next((r for r in self._repos() if _identity(r) == _identity(repo)), None)

    def idle(self, repo_name: str) -> list[Path]:
        with self._lock:
            return list(self._idle.get(repo_name, []))

    # ------------------------------------------------------------ take

    def take(self, repo: Repo, dest: Path, branch: str, base: str) -> bool:
        """Put a recycled tree at ``dest`` on ``branch`` at ``base``; False if none was idle.

        On any failure the tree is discarded and False returned: the caller then
        makes a fresh worktree.
        """
        with self._lock:
            self._recent(repo.name).append(self._clock())  # demand: what sizes the pool
            trees = self._idle.get(repo.name, [])
            tree = trees.pop() if trees else None
            unchecked = tree in self._unchecked
            if tree is not None:
                self._unchecked.discard(tree)
        if tree is not None and unchecked and not self._adopt(repo, tree):
            tree = None  # not a healthy tree (removed): a fresh one instead
        if tree is None:
            self.fill(repo)
            return False
        repo_path = Path(repo.path)
        # The commit the tree was reset to, if nothing touched it since: read before the
        # move (which renames it: an event of its parent, not of the tree).
        clean_at = self._untouched.end(tree)
        try:
            worktrees.move(repo_path, tree, dest)
            if clean_at is not None and clean_at == base:
                worktrees.start_branch(dest, branch, base)  # no checkout, no clean
            elif clean_at is not None:
                worktrees.switch_clean(dest, branch, base)  # only what differs; no clean
            else:
                worktrees.recycle(dest, branch, base, keep=self._keep_for(repo))
        except (DispatcherError, OSError) as exc:
            log.warning(
                "pool %s: recycling %s failed (%s); making a fresh one", repo.name, tree, exc
            )
            for path in (dest, tree):
                with contextlib.suppress(DispatcherError, OSError):
                    worktrees.remove(repo_path, path)
            with contextlib.suppress(DispatcherError):
                worktrees.delete_branch(repo_path, branch)
            self.fill(repo)
            return False
        # No refill here: the caller calls fill() once its agent runs, so the refill's
        # checkout (holding the repo's worktree lock) never delays this spawn.
        return True

    # ------------------------------------------------------------ release

    def release(
        self,
        repo: Repo,
        worktree: Path,
        *,
        job_id: int,
        exclude: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> commits.Leftovers | None:
        """Take a job's worktree away from its path now; recycle or remove it later.

        Uncommitted edits (made after the job finished) are saved to
        ``refs/dispatcher/released/<job id>`` before anything else (see
        :func:`save_released`, whose result this is; None if nothing was saved).
        """
        repo_path = Path(repo.path)
        if not worktree.exists():
            worktrees.remove(repo_path, worktree)
            return None
        if not worktrees.is_valid(worktree, repo_path):
            worktrees.remove(repo_path, worktree)  # leftovers are the sweeper's business
            return None
        saved = save_released(self.settings, worktree, job_id, exclude, max_file_bytes)
        self.give_back(repo, worktree)
        return saved

    def give_back(self, repo: Repo, worktree: Path) -> None:
        """A valid worktree whose job is done with it, everything of it worth keeping saved
        (its commits on refs, its leftovers by :meth:`release` or the sweeper): moved out of
        its path now, cleaned in the background and back into the pool (or removed)."""
        repo_path = Path(repo.path)
        # A partial checkout is no use to the next job; with no pool for the repo, the tree
        # goes now, as it would if the daemon had no pool at all.
        if worktrees.is_sparse(worktree) or self.size_for(repo) <= 0:
            worktrees.remove(repo_path, worktree)
            return
        parked = self.root / repo.name / f"released-{uuid.uuid4().hex[:12]}"
        try:
            worktrees.move(repo_path, worktree, parked)
            worktrees.detach_head(parked)  # the job's branch is free (to delete) at once
        except (DispatcherError, OSError):
            for path in (worktree, parked):
                worktrees.remove(repo_path, path)
            return
        with self._lock:
            _count(self._busy, repo.name, 1)
        self._submit(lambda: self._reuse_or_remove(repo, parked), _RELEASED)

    def _reuse_or_remove(self, repo: Repo, tree: Path) -> None:
        """Clean a released tree and put it back; it displaces the oldest idle tree
        when the pool is at its target (a used tree may hold kept dependency installs)."""
        repo_path = Path(repo.path)
        displaced: Path | None = None
        failed = False
        try:
            current = self._current(repo)  # its pool size may have changed since the release
            if current is None or self.size_for(current) <= 0:
                worktrees.remove(repo_path, tree)
                return
            repo = current
            worktrees.unlock(repo_path, tree)  # the job's lock came along with the move
            keep = self._keep_for(repo)
            sha = worktrees.reset_detached(tree, repo.default_branch, keep=keep)
            ready = tree.with_name(f"idle-{uuid.uuid4().hex[:12]}")
            worktrees.move(repo_path, tree, ready)
            self._untouched.start(ready, sha, skip=keep)
            want = self.target(repo)
            with self._lock:
                if _identity(repo) in self._forgotten:  # unregistered while it was cleaned
                    displaced = ready
                else:
                    idle = self._idle.setdefault(repo.name, [])
                    idle.append(ready)
                    if len(idle) > want:
                        displaced = idle.pop(0)
        except (DispatcherError, OSError) as exc:
            log.warning("pool %s: cannot reuse %s (%s); removing it", repo.name, tree, exc)
            failed = True
            with contextlib.suppress(DispatcherError, OSError):
                worktrees.remove(repo_path, tree)
        finally:
            with self._lock:
                _count(self._busy, repo.name, -1)
        if displaced is not None:
            self._delete_idle(repo, displaced)
        if failed:
            self.fill(repo)  # a checkout may have been skipped for this tree (see _make)

    # ------------------------------------------------------------ fill and refresh

    def _coming(self, repo_name: str) -> int:
        """Idle trees, released ones being cleaned and checkouts queued. Under the lock."""
        name = repo_name
        return len(self._idle.get(name, [])) + self._busy.get(name, 0) + self._making.get(name, 0)

    def fill(self, repo: Repo) -> None:
        """Make idle trees in the background until the repo has its :meth:`target`."""
        want = self.target(repo)
        with self._lock:
            missing = want - self._coming(repo.name)
            if missing <= 0:
                return
            _count(self._making, repo.name, missing)
        for _ in range(missing):
            self._submit(lambda: self._make(repo), _CHECKOUT)

    def resize(self, repo: Repo) -> None:
        """The repo's pool size changed: idle trees past its target are removed, and the
        pool fills up to it, in the background."""
        self._trim(repo)
        self.fill(repo)

    def _trim(self, repo: Repo) -> None:
        want = self.target(repo)
        with self._lock:
            idle = self._idle.get(repo.name, [])
            extra = max(0, len(idle) - want)
            surplus, idle[:] = idle[:extra], idle[extra:]
        for tree in surplus:  # idle trees are never locked: delete without the lock
            self._submit(functools.partial(self._delete_idle, repo, tree))

    def _delete_idle(self, repo: Repo, tree: Path) -> None:
        self._untouched.end(tree)
        with contextlib.suppress(DispatcherError, OSError):
            worktrees.delete_unlocked(Path(repo.path), tree)

    def _put_idle(
        self, repo: Repo, tree: Path, *, first: bool = False, reset_to: str | None = None
    ) -> None:
        """``tree`` is ready: idle (first in line to be displaced, with ``first``), or
        removed if the repo was unregistered while it was being made or cleaned.
        ``reset_to``: the commit it was just checked out or reset to, clean; it is watched
        from now on (:mod:`dispatcher.git.untouched`), so its take can skip the reset."""
        if reset_to is not None:
            self._untouched.start(tree, reset_to, skip=self._keep_for(repo))
        with self._lock:
            if _identity(repo) not in self._forgotten:
                idle = self._idle.setdefault(repo.name, [])
                idle.insert(0, tree) if first else idle.append(tree)
                return
        self._delete_idle(repo, tree)

    def _make(self, repo: Repo) -> None:
        try:
            current = self._current(repo)
            if current is None:
                return  # unregistered since the checkout was queued
            repo = current
            with self._lock:
                if self._coming(repo.name) - 1 >= self._target_locked(repo):
                    return  # a released tree came meanwhile
            # Made under another name, renamed when its checkout is whole: a daemon that
            # dies meanwhile leaves no half-made idle tree (start() removes a new-* one).
            made = self.root / repo.name / f"new-{uuid.uuid4().hex[:12]}"
            made.parent.mkdir(parents=True, exist_ok=True)
            sha = worktrees.add_detached(Path(repo.path), made, repo.default_branch)
            tree = made.with_name(made.name.replace("new-", "idle-", 1))
            try:
                worktrees.move(Path(repo.path), made, tree)
            except (DispatcherError, OSError):
                with contextlib.suppress(DispatcherError, OSError):
                    worktrees.remove(Path(repo.path), made)
                raise
            self._put_idle(repo, tree, reset_to=sha)
        except (DispatcherError, OSError) as exc:
            log.warning("pool %s: cannot make a worktree: %s", repo.name, exc)
        finally:
            with self._lock:
                _count(self._making, repo.name, -1)

    def refresh(self, repo: Repo) -> None:
        """The default branch moved: bring idle trees to its tip, in the background."""
        self._submit(lambda: self._refresh(repo))

    def _refresh(self, repo: Repo) -> None:
        for tree in self.idle(repo.name):
            with self._lock:
                if tree not in self._idle.get(repo.name, []) or tree in self._unchecked:
                    continue  # taken meanwhile, or still to check (its taker recycles it)
                self._idle[repo.name].remove(tree)
            self._untouched.end(tree)
            try:
                keep = self._keep_for(repo)
                sha = worktrees.reset_detached(tree, repo.default_branch, keep=keep)
                self._put_idle(repo, tree, reset_to=sha)
            except (DispatcherError, OSError) as exc:
                log.warning("pool %s: cannot refresh %s (%s); removing it", repo.name, tree, exc)
                with contextlib.suppress(DispatcherError, OSError):
                    worktrees.remove(Path(repo.path), tree)
        self.fill(repo)

    def forget(self, repo: Repo) -> None:
        """The repo is unregistered: remove its trees (and, as each ends, those its queued
        work was making or cleaning)."""
        with self._lock:
            self._forgotten.add(_identity(repo))
            trees = self._idle.pop(repo.name, [])
            self._unchecked.difference_update(trees)
            self._starts.pop(repo.name, None)
        for tree in trees:
            self._untouched.end(tree)
            with contextlib.suppress(DispatcherError, OSError):
                worktrees.remove(Path(repo.path), tree)

    def _adopt(self, repo: Repo, tree: Path) -> bool:
        """Check a tree the last daemon left: an idle tree that is a valid linked worktree
        of ``repo`` is kept, unlocked (True); anything else is removed. It is not reset
        here: the job that takes it recycles it (``checkout -f -B`` and ``clean -ffdx``,
        the very reset), so a restart costs one ``rev-parse`` per tree, not a checkout."""
        repo_path = Path(repo.path)
        try:
            if tree.name.startswith("idle-") and worktrees.is_valid(tree, repo_path):
                worktrees.unlock(repo_path, tree)
                return True
            worktrees.remove(repo_path, tree)
        except (DispatcherError, OSError) as exc:
            log.warning("pool %s: dropping %s: %s", repo.name, tree, exc)
            with contextlib.suppress(DispatcherError, OSError):
                worktrees.remove(repo_path, tree)
        return False

    def _check_leftover(self, repo: Repo, tree: Path) -> None:
        """Check one tree the last daemon left (the workers' lowest-priority work)."""
        faults.reach("pool.check-leftover")
        idle_tree = tree.name.startswith("idle-")
        with self._lock:
            if idle_tree:
                idle = self._idle.get(repo.name, [])
                if tree not in self._unchecked or tree not in idle:
                    self._unchecked.discard(tree)
                    return  # taken (and checked), displaced or forgotten meanwhile
                self._unchecked.discard(tree)
                idle.remove(tree)
                _count(self._busy, repo.name, 1)
        kept = False
        try:
            current = self._current(repo)
            if current is None:  # unregistered since start: its trees go
                with contextlib.suppress(DispatcherError, OSError):
                    worktrees.remove(Path(repo.path), tree)
                return
            repo = current
            kept = self._adopt(repo, tree)
            if kept:
                self._put_idle(repo, tree, first=True)
        finally:
            if idle_tree:
                with self._lock:
                    _count(self._busy, repo.name, -1)
        if idle_tree and not kept:
            self.fill(repo)  # one short now

    # ------------------------------------------------------------ worker

    def _submit(self, task: Callable[[], None], priority: int = _OTHER) -> None:
        self._work.put((priority, next(self._order), task))

    def _worker(self) -> None:
        while True:
            _, _, task = self._work.get()
            if task is None:
                return
            try:
                task()
            except Exception:
                log.exception("pool task failed")


def _identity(repo: Repo) -> tuple[int | None, object]:
    """A registration of a repo: its id and when it was registered (ids can be reused)."""
    return repo.id, repo.created_at


def _count(counts: dict[str, int], name: str, by: int) -> None:
    """Add ``by`` to a repo's count of trees under way (never below 0). Under the lock."""
    counts[name] = max(0, counts.get(name, 0) + by)
