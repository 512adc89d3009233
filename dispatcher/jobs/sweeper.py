"""Worktree consistency and retention: what is on disk agrees with the database.

At start (after :meth:`Runner.recover`) and every few minutes the daemon calls
:meth:`Sweeper.sweep`. For every registered repo whose path still holds a
repository it:

1. runs ``git worktree prune``;
2. disposes of *orphans*, directories under ``<worktrees>/<repo>/`` that no job
   claims: a healthy worktree's uncommitted state (or an unreferenced HEAD) is
   saved to ``refs/dispatcher/orphans/<dir>-<UTC time>`` and the worktree is
   removed; anything git cannot read is moved to ``<state>/lost+found/<repo>/``;
3. clears the worktree of *finished* jobs whose worktree vanished (or is
   corrupted, then moved to lost+found), noting why in ``error``; running jobs
   belong to the runner and are only reported, and their worktrees are locked;
4. removes finished worktrees older than ``worktree_retention_hours``, saving
   leftovers to ``refs/dispatcher/retained/<job id>``; with a warm pool the tree
   is then given back to it (reset and cleaned, saving a checkout) rather than
   deleted.

Branches are never deleted and user-visible files are never deleted without a
copy: a directory whose snapshot would not hold everything (nested
repositories) goes to lost+found instead. Ignored files are not saved.

Decisions that depend on time take ``now`` (injected clock); the git work is in
:mod:`dispatcher.git`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, NotFound
from dispatcher.git import commits, refs, worktrees
from dispatcher.jobs.cleanup import run_cleanup
from dispatcher.jobs.files import job_files
from dispatcher.jobs.leftovers import left_out_note
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import ACTIVE, FINISHED, JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo, utcnow

log = logging.getLogger(__name__)

VANISHED = "worktree vanished; the branch is kept"
ORPHANS_REF = "refs/dispatcher/orphans/"
RETAINED_REF = "refs/dispatcher/retained/"
LOST_FOUND = "lost+found"


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class Orphan:
    """A worktree directory no job claimed, and what became of it."""

    repo: str
    path: Path
    ref: str | None = None  # where its uncommitted state (or unreferenced HEAD) was saved
    moved_to: Path | None = None  # lost+found, when it was not a healthy worktree


@dataclass(frozen=True)
class Vanished:
    """A finished job whose worktree was gone (or corrupted, then moved to lost+found)."""

    job_id: int
    worktree: str
    moved_to: Path | None = None


@dataclass(frozen=True)
class Retained:
    """A finished job's worktree removed after the retention time; its branch is kept."""

    job_id: int
    worktree: str
    ref: str | None = None  # where uncommitted leftovers were saved
    moved_to: Path | None = None  # lost+found, when a snapshot could not hold everything


@dataclass
class SweepReport:
    pruned: list[str] = field(default_factory=list)  # repos where `git worktree prune` ran
    skipped: list[str] = field(default_factory=list)  # "<repo>: why" (path is not a repo)
    orphans: list[Orphan] = field(default_factory=list)
    vanished: list[Vanished] = field(default_factory=list)
    running_without_worktree: list[int] = field(default_factory=list)  # the runner fails them
    locked: list[int] = field(default_factory=list)  # running jobs whose worktree we locked
    retained: list[Retained] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- pure decisions


def retention_due(finished_at: datetime | None, now: datetime, hours: float) -> bool:
    """True if a job finished at ``finished_at`` has outlived ``hours`` (0 disables)."""
    if hours <= 0 or finished_at is None:
        return False
    return _utc(now) - _utc(finished_at) >= timedelta(hours=hours)


def unclaimed(dirs: Iterable[Path], claimed: set[str], active_ids: set[int]) -> list[Path]:
    """The directories in ``dirs`` that belong to no job.

    ``claimed`` holds the real paths of every job's ``worktree``; a directory
    named after an active job's id is claimed too (the runner creates the
    worktree a moment before it records the path).
    """
    return sorted(
        d
        for d in dirs
        if os.path.realpath(d) not in claimed
        and not (d.name.isdigit() and int(d.name) in active_ids)
    )


def stamp(now: datetime) -> str:
    """``20240102T030405Z``: a UTC time for ref and directory names."""
    return _utc(now).strftime("%Y%m%dT%H%M%SZ")


def ref_component(name: str) -> str:
    """``name`` made safe as one ref path component: ``[A-Za-z0-9_-]`` only, never empty."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:100] or "worktree"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------- the sweeper


class Sweeper:
    def __init__(self, settings: Settings, store: Store, pool: WorktreePool | None = None) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool  # where retired worktrees go back to, if any
        self._lock = threading.Lock()  # one sweep at a time
        # This daemon's node (docs/cluster.md), set by the daemon: the jobs a sweep knows
        # are its own (and every queued one); another node's are on another machine.
        self.node: str | None = None

    @property
    def retention_hours(self) -> float:
        return float(self.settings.worktree_retention_hours)

    def loop(
        self, stop: threading.Event, interval_s: float, clock: Callable[[], datetime] = utcnow
    ) -> None:
        """Sweep now and then every ``interval_s`` until ``stop`` is set (a daemon thread)."""
        while not stop.is_set():
            self.store.check_hold()  # PostgreSQL: a dropped hold is taken again, or said
            try:
                report = self.sweep(now=clock())
                for error in report.errors:
                    log.warning("sweep: %s", error)
            except Exception:
                log.exception("worktree sweep failed")
            stop.wait(interval_s)

    def sweep(self, *, now: datetime) -> SweepReport:
        steps = (self._orphans, self._vanished, self._running, self._retention)
        return self._sweep(self.store.repos(), steps, now)

    def sweep_orphans(self, repos: Sequence[Repo], *, now: datetime) -> SweepReport:
        """Steps 1 and 2 only, for ``repos``: git's stale records pruned, orphans
        disposed of (``dispatcher prune`` tidies with it)."""
        return self._sweep(repos, (self._orphans,), now)

    def orphans(self, repo: Repo) -> list[Path]:
        """The directories of ``repo`` that step 2 would dispose of now (a dry run)."""
        jobs = [j for j in self.store.jobs_holding_worktrees(self.node) if j.repo_id == repo.id]
        return unclaimed(self._dirs(repo), *_claims(jobs))

    def _sweep(self, repos_: Sequence[Repo], steps: Sequence[_Step], now: datetime) -> SweepReport:
        report = SweepReport()
        with self._lock:
            repos: list[tuple[Repo, Path, list[Path]]] = []
            for repo in repos_:
                repo_path = Path(repo.path)
                try:
                    refs.common_dir(repo_path)
                except DispatcherError:
                    report.skipped.append(f"{repo.name}: {repo.path} no longer holds a repository")
                    continue
                try:
                    worktrees.prune(repo_path)
                    report.pruned.append(repo.name)
                except DispatcherError as exc:
                    report.errors.append(f"{repo.name}: git worktree prune: {exc.message}")
                # Directories first, jobs second: a worktree made in between belongs to
                # a job that the read below sees.
                repos.append((repo, repo_path, self._dirs(repo)))
            jobs = self.store.jobs_holding_worktrees(self.node)
            for repo, repo_path, dirs in repos:
                mine = [j for j in jobs if j.repo_id == repo.id]
                for step in steps:
                    try:
                        step(repo, repo_path, dirs, mine, now, report)
                    except (DispatcherError, OSError) as exc:
                        report.errors.append(f"{repo.name}: {_describe(exc)}")
        for orphan in report.orphans:
            log.info("sweep: orphan %s -> %s", orphan.path, orphan.ref or orphan.moved_to)
        for job in report.vanished:
            log.info("sweep: job %s: %s", job.job_id, VANISHED)
        for kept in report.retained:
            log.info("sweep: job %s: worktree removed after retention", kept.job_id)
        return report

    # ------------------------------------------------------------ steps

    def _dirs(self, repo: Repo) -> list[Path]:
        root = self.settings.worktrees_dir / repo.name
        try:
            with os.scandir(root) as entries:
                return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def _orphans(
        self,
        repo: Repo,
        repo_path: Path,
        dirs: list[Path],
        jobs: list[Job],
        now: datetime,
        report: SweepReport,
    ) -> None:
        for path in unclaimed(dirs, *_claims(jobs)):
            try:
                report.orphans.append(self._dispose_orphan(repo, repo_path, path, now))
            except (DispatcherError, OSError) as exc:
                report.errors.append(f"{repo.name}: orphan {path}: {_describe(exc)}")

    def _dispose_orphan(self, repo: Repo, repo_path: Path, path: Path, now: datetime) -> Orphan:
        if not worktrees.is_valid(path, repo_path):
            moved = self._to_lost_found(repo, path, now)
            worktrees.remove(repo_path, path)  # drop git's record, if any (path is gone)
            return Orphan(repo.name, path, moved_to=moved)
        ref = f"{ORPHANS_REF}{ref_component(path.name)}-{stamp(now)}"
        ref = _unused_ref(repo_path, ref)
        message = (
            f"dispatcher: orphan worktree {path.name} of {repo.name}, saved before removal\n\n"
            f"Path: {path}\n"
        )
        saved, sha = self._save(repo_path, path, ref, message, None)
        if sha is not None and refs.changed_gitlinks(repo_path, sha):
            moved = self._to_lost_found(repo, path, now)
            worktrees.remove(repo_path, path)
            return Orphan(repo.name, path, ref=saved, moved_to=moved)
        worktrees.remove(repo_path, path)
        return Orphan(repo.name, path, ref=saved)

    def _vanished(
        self,
        repo: Repo,
        repo_path: Path,
        dirs: list[Path],
        jobs: list[Job],
        now: datetime,
        report: SweepReport,
    ) -> None:
        for job in jobs:
            if job.state not in FINISHED or not job.worktree or job.id is None:
                continue
            path = Path(job.worktree)
            try:
                if path.exists() and worktrees.is_valid(path, repo_path):
                    continue
                fresh = self.store.job(job.id)
                if fresh.state not in FINISHED or fresh.worktree != job.worktree:
                    continue  # merged, discarded or moved meanwhile
                moved = self._to_lost_found(repo, path, now) if path.exists() else None
                worktrees.remove(repo_path, path)  # drop git's record (path is gone)
                self.store.update(job.id, worktree=None, error=fresh.error or VANISHED)
                job.worktree = None  # retention skips it
                report.vanished.append(Vanished(job.id, str(path), moved))
                self._note(
                    job.id, VANISHED + (f"; its files were moved to {moved}" if moved else "")
                )
            except (DispatcherError, OSError) as exc:
                report.errors.append(f"{repo.name}: job {job.id}: {_describe(exc)}")

    def _running(
        self,
        repo: Repo,
        repo_path: Path,
        dirs: list[Path],
        jobs: list[Job],
        now: datetime,
        report: SweepReport,
    ) -> None:
        """Report running jobs whose worktree is gone; lock the others' (the runner owns them)."""
        running = [j for j in jobs if j.state is JobState.RUNNING and j.worktree and j.id]
        if not running:
            return
        entries = {os.path.realpath(w.path): w for w in worktrees.entries(repo_path)}
        for job in running:
            assert job.worktree is not None and job.id is not None
            path = Path(job.worktree)
            if not path.is_dir():
                report.running_without_worktree.append(job.id)
                continue
            entry = entries.get(os.path.realpath(path))
            if entry is not None and not entry.locked and not entry.prunable:
                try:
                    worktrees.lock(repo_path, path, f"dispatcher job {job.id}")
                    report.locked.append(job.id)
                except DispatcherError as exc:
                    report.errors.append(f"{repo.name}: job {job.id}: {exc.message}")

    def _retention(
        self,
        repo: Repo,
        repo_path: Path,
        dirs: list[Path],
        jobs: list[Job],
        now: datetime,
        report: SweepReport,
    ) -> None:
        hours = self.retention_hours
        for job in jobs:
            if (
                job.state not in FINISHED
                or not job.worktree
                or job.id is None
                or not retention_due(job.finished_at, now, hours)
            ):
                continue
            try:
                result = self._retire(repo, repo_path, job, now)
            except (DispatcherError, OSError) as exc:
                report.errors.append(f"{repo.name}: job {job.id}: {_describe(exc)}")
                continue
            if result is not None:
                report.retained.append(result)

    def _retire(self, repo: Repo, repo_path: Path, job: Job, now: datetime) -> Retained | None:
        assert job.id is not None and job.worktree is not None
        fresh = self.store.job(job.id)
        if fresh.state not in FINISHED or fresh.worktree != job.worktree:
            return None  # merged, discarded or moved meanwhile
        path = Path(job.worktree)
        ws = Workspace.model_validate(job.workspace or {})
        checkouts = [Path(r.path) for r in self.store.repos()]
        run_cleanup(self.settings, job.id, ws, path, checkouts=checkouts)
        message = (
            f"dispatcher: uncommitted changes left in job {job.id}'s worktree, "
            f"saved when it was removed after {self.retention_hours:g}h\n\nBranch: {job.branch}\n"
        )
        saved, sha = self._save(repo_path, path, f"{RETAINED_REF}{job.id}", message, job.id, ws)
        moved = None
        if sha is not None and refs.changed_gitlinks(repo_path, sha):
            moved = self._to_lost_found(repo, path, now)
        if moved is None and self.pool is not None and path.is_dir():
            self.pool.give_back(repo, path)  # everything of the job is saved: reuse the tree
        else:
            worktrees.remove(repo_path, path)
        self.store.update(job.id, worktree=None)
        note = f"worktree removed after {self.retention_hours:g}h; branch {job.branch} is kept"
        if saved:
            note += f"; uncommitted changes saved at {saved}"
        if moved:
            note += f"; its files were moved to {moved}"
        self._note(job.id, note)
        return Retained(job.id, job.worktree, ref=saved, moved_to=moved)

    # ------------------------------------------------------------ helpers

    def _save(
        self,
        repo_path: Path,
        worktree: Path,
        ref: str,
        message: str,
        job_id: int | None,
        ws: Workspace | None = None,
    ) -> tuple[str | None, str | None]:
        """Save what removing ``worktree`` would lose at ``ref``: (ref, snapshot sha).

        Uncommitted state becomes a snapshot commit; a clean worktree whose HEAD
        no ref contains (a detached HEAD with its own commits) gets the ref on
        HEAD. (None, None) when there is nothing to keep. Files the snapshot
        leaves out (over the size limit: the job's workspace's, else the
        daemon's) are named in the job's log (``job_id``), else the daemon log.
        """
        ws = ws or Workspace()
        done = commits.snapshot_worktree(
            worktree,
            ref,
            message,
            author_name=self.settings.commit_author_name,
            author_email=self.settings.commit_author_email,
            exclude=ws.never_commit(),
            max_file_bytes=ws.max_leftover_bytes(self.settings.max_leftover_file_mb),
        )
        if note := left_out_note(ref, done):
            if job_id is not None:
                self._note(job_id, note)
            else:
                log.warning("%s: %s", worktree, note)
        sha = done.sha
        if sha is not None:
            return ref, sha
        try:
            head = refs.rev_parse(worktree, "HEAD")
        except NotFound:
            return None, None  # unborn: nothing committed, nothing uncommitted
        if refs.is_referenced(repo_path, head):
            return None, None
        commits.update_ref(repo_path, ref, head, message)
        return ref, None

    def _to_lost_found(self, repo: Repo, path: Path, now: datetime) -> Path:
        """Move ``path`` to ``<state>/lost+found/<repo>/<name>-<time>``; the new path."""
        root = self.settings.state_dir / LOST_FOUND / repo.name
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        base = f"{path.name}-{stamp(now)}"
        target = root / base
        n = 1
        while target.exists():
            n += 1
            target = root / f"{base}-{n}"
        try:
            os.rename(path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(os.fspath(path), os.fspath(target))
        return target

    def _note(self, job_id: int, text: str) -> None:
        """Append a line to the job's log, best effort."""
        try:
            files = job_files(self.settings, job_id)
            files.root.mkdir(parents=True, exist_ok=True)
            with open(files.log, "a", encoding="utf-8") as fh:
                fh.write(f"[dispatcher] {text}\n")
        except OSError as exc:
            log.warning("job %s: cannot write its log (%s): %s", job_id, exc, text)


_Step = Callable[[Repo, Path, list[Path], list[Job], datetime, SweepReport], None]
"""One step of a sweep, for one repo: (repo, its path, its directories, its jobs, now, report)."""


def _claims(jobs: Iterable[Job]) -> tuple[set[str], set[int]]:
    """What :func:`unclaimed` needs of ``jobs``: their worktrees' real paths, the active ids."""
    claimed = {os.path.realpath(j.worktree) for j in jobs if j.worktree}
    return claimed, {j.id for j in jobs if j.id is not None and j.state in ACTIVE}


def _unused_ref(repo_path: Path, ref: str) -> str:
    """``ref``, or ``ref-2``, ``ref-3``... if it is taken."""
    taken = refs.for_each_ref(repo_path, ref.rsplit("/", 1)[0] + "/")
    candidate, n = ref, 1
    while candidate in taken:
        n += 1
        candidate = f"{ref}-{n}"
    return candidate


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DispatcherError):
        return exc.message
    return str(exc)
