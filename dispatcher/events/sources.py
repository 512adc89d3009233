"""Runs the local event sources and feeds what they see into the one ingest path.

* **Refs**: watchdog on each repo's refs is only a hint; the truth is
  ``git for-each-ref`` compared with the last seen values kept in the database
  (:attr:`~dispatcher.store.models.Clone.refs`, this node's clone's). So packed refs,
  missed inotify events and daemon downtime lose nothing: at start every repo is scanned against the
  last values seen, and dedup keys make a re-emitted move harmless. The
  snapshot is saved only after its events are stored.
* **Files**: ``file_change`` triggers get debounced changes in the working copy
  (never ``.git``, never worktrees, which live in the state dir).
* **Schedules**: cron entries of every repo's triggers, run on APScheduler by
  :class:`~dispatcher.events.schedules.Schedules` (its docstring states the
  policy for missed fire times: they coalesce, within an optional grace time,
  and those missed while the daemon was stopped fire once at start).

When the default branch moves, the repo's trigger file is re-read first, so a
push that changes ``.dispatcher/triggers.yml`` is matched against the new file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.events.schedules import Schedules
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.git import refs as git_refs
from dispatcher.store.database import Store
from dispatcher.store.models import Repo
from triggers import refs
from triggers.events import Event
from triggers.watch import RepoWatcher

log = logging.getLogger(__name__)


class Sources:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        trigger_files: TriggerFiles,
        ingest: Callable[[Event], object],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_default_moved: Callable[[Repo], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_default_moved = on_default_moved  # the warm pool follows the branch
        self.store = store
        self.trigger_files = trigger_files
        self.ingest = ingest  # the intake's one path for events
        self.watcher = RepoWatcher(
            self._on_refs,
            self._on_files,
            git_dir=git_refs.common_dir,
            poll_interval=settings.ref_poll_seconds,
        )
        grace = settings.schedule_grace_seconds
        self.schedules = Schedules(
            ingest,
            self._last_schedule_fires,
            clock=clock,
            grace=None if grace is None else timedelta(seconds=grace),
        )
        self._scan_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._starting: threading.Thread | None = None
        self._stopping = threading.Event()
        self.ready = threading.Event()  # set once start()'s catch-up (and its ``then``) is done

    # ------------------------------------------------------------ lifecycle

    def start(self, then: Callable[[], object] | None = None) -> None:
        """Catch up and arm every repo on a thread of its own, then call ``then``.

        The daemon answers and takes jobs meanwhile: a restart costs no per-repo work
        before ``/health`` answers (``docs/design.md``, "Start-up"). The watcher runs
        first, so a repo's refs are watched before they are scanned."""
        self.watcher.start()
        self._starting = threading.Thread(
            target=self._catch_up, args=(then,), name="sources-start", daemon=True
        )
        self._starting.start()

    def _catch_up(self, then: Callable[[], object] | None) -> None:
        # The last good trigger files were restored by the composition root, before any
        # job could end (their notify targets); here each is re-read from its branch.
        for repo in self.store.repos():
            if self._stopping.is_set():
                return
            try:
                self.trigger_files.load(repo)
                if self.store.find_repo(name=repo.name) is None:
                    continue  # removed meanwhile
                self._arm(self.store.repo_by_name(repo.name))
                if self.store.find_repo(name=repo.name) is None:  # removed while armed:
                    self.repo_removed(repo)  # its own unwatch may have come before our arm
                    continue
                self.scan_refs(repo.name)  # catch up with what happened while we were down
            except Exception:
                log.exception("repo %s: start-up scan failed", repo.name)
        if self._stopping.is_set():
            return
        self.schedules.start()  # the schedules armed above catch up what came due while down
        log.info("event sources: every repo caught up")
        if then is not None:
            try:
                then()
            except Exception:
                log.exception("start-up: %r failed", then)
        self.ready.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._starting is not None:
            self._starting.join(30)
        self.watcher.stop()
        self.schedules.stop()

    # ------------------------------------------------------------ RepoListener

    def repo_added(self, repo: Repo) -> None:
        # Baseline: refs as they are now; only later moves are events.
        try:
            self.store.save_ref_state(_id(repo), refs.snapshot(git_refs, Path(repo.path)))
        except DispatcherError as exc:
            log.warning("repo %s: cannot read refs: %s", repo.name, exc.message)
        self._arm(self.store.repo_by_name(repo.name))

    def repo_removed(self, repo: Repo) -> None:
        self.watcher.unwatch(repo.name)
        self.schedules.remove_repo(repo.name)

    # ------------------------------------------------------------ arming

    def _arm(self, repo: Repo) -> None:
        """Watch and schedule what the repo's active trigger file asks for."""
        active = self.trigger_files.active(_id(repo))
        triggers = active.trigger_list() if active else []
        file_triggers = [t for t in triggers if "file_change" in t.kinds()]
        files = self.settings.watch_files and bool(file_triggers)
        self.watcher.watch(repo.name, Path(repo.path), files=files)
        if file_triggers:
            quiet = min(t.file_change_debounce() for t in file_triggers)
            self.watcher.set_file_quiet(repo.name, quiet)
        crons = sorted({c for t in triggers for c in t.crons()})
        self.schedules.set_repo(repo.name, crons)

    # ------------------------------------------------------------ refs

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._scan_locks.setdefault(name, threading.Lock())

    def _on_refs(self, repo_name: str) -> None:
        self.scan_refs(repo_name)

    def scan_refs(self, repo_name: str) -> list[Event]:
        """Compare the repo's branches with the last seen values; ingest the moves."""
        with self._lock_for(repo_name):
            repo = self.store.find_repo(name=repo_name)
            if repo is None or not (Path(repo.path) / ".git").exists():
                return []
            last = self.store.ref_state(_id(repo))
            events, snapshot = refs.scan(
                git_refs,
                repo_path=Path(repo.path),
                repo_name=repo.name,
                default_branch=repo.default_branch,
                last_seen=last,
            )
            default_ref = f"refs/heads/{repo.default_branch}"
            if last.get(default_ref) != snapshot.get(default_ref):
                if self.trigger_files.load(repo):
                    self._arm(self.store.repo_by_name(repo.name))
                if last and self.on_default_moved is not None:
                    self.on_default_moved(repo)
            for event in events:
                self.ingest(event)
            self.store.save_ref_state(_id(repo), snapshot)
            return events

    # ------------------------------------------------------------ files

    def _on_files(self, repo_name: str, paths: list[str]) -> None:
        digest = hashlib.sha256("\0".join(sorted(paths)).encode()).hexdigest()[:16]
        event = Event(
            kind="file_change",
            source="local",
            repo=repo_name,
            dedup_key=f"local:{repo_name}:files:{time.time_ns()}:{digest}",
            payload={
                "paths": sorted(paths),
                "repository": {"name": repo_name, "full_name": repo_name},
            },
            paths=sorted(paths),
            author="local",
        )
        self.ingest(event)

    # ------------------------------------------------------------ schedules

    def _last_schedule_fires(self, repo_name: str) -> dict[str, datetime]:
        repo = self.store.find_repo(name=repo_name)
        return {} if repo is None else self.store.last_schedule_fires(_id(repo))


def _id(repo: Repo) -> int:
    assert repo.id is not None
    return repo.id
