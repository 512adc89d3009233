"""Ending a job's run or its work: cancel, discard, merge (and the merges a crash left).

The service never moves a job the runner owns (``preparing``/``running``): it
asks the runner (:class:`Supervisor`) to stop it and waits for the runner to
record the end. One lock per job serializes these actions and a follow-up
(which takes over the job's worktree): a double click has one effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from dispatcher.cluster.peers import Holder, Peers
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidState, NodeUnavailable, RefMoved
from dispatcher.git import refs, worktrees
from dispatcher.git import remote as git_remote
from dispatcher.jobs.cleanup import run_cleanup
from dispatcher.jobs.diskuse import DiskUse
from dispatcher.jobs.files import note_job
from dispatcher.jobs.leftovers import left_out_note, released_ref, save_released
from dispatcher.jobs.merge import land, reconcile, recover
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import ACTIVE, FINISHED, JobState
from dispatcher.service.credentials import hub_of
from dispatcher.service.notices import Notices
from dispatcher.store.database import Store
from dispatcher.store.models import ActionResult, Job, JobPublic, MergeRequest, Repo, utcnow

log = logging.getLogger(__name__)


class Supervisor(Protocol):
    """What the service needs from the runner (in-process today, a queue later)."""

    def wake(self) -> None: ...
    def cancel(self, job_id: int) -> None: ...
    def join(self, job_id: int, timeout: float) -> None: ...


@dataclass(eq=False)
class Control:
    """Cancel, discard and merge, one at a time per job."""

    settings: Settings
    store: Store
    supervisor: Supervisor
    notices: Notices
    pool: WorktreePool | None
    disk_use: DiskUse | None = None  # told when a job's tree goes
    # Told of a queued job this ends itself (no runner ever had it, so no runner's end
    # hook runs): set by the service to FixLoop.job_ended (a queued fix follow-up
    # canceled or discarded lets its chain's next fix go).
    on_unrun: Callable[[int, Job], None] | None = None
    # Told of a job merged or discarded here (set by the service to Hubs.closed: its
    # work-in-progress refs go from its repo's hub). Must not raise.
    on_closed: Callable[[Job], None] | None = None
    # A repo's hub (set by the service to Hubs.remote_of: its setting, else its trigger
    # file's); None: merges are local.
    hub_name: Callable[[Repo], str | None] = lambda repo: repo.hub
    # The other nodes' (docs/cluster.md): an action on a job another node holds is asked
    # of that node (set by the service; None: every job is this node's).
    peers: Peers | None = None
    _locks: dict[int, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def lock(self, job_id: int) -> threading.Lock:
        """Serializes merge/discard/cancel/follow-up of one job: a double click has one
        effect."""
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def elsewhere(self, job_id: int, what: str) -> Holder | None:
        """The other node that holds the job, which ``what`` must be asked of (None: this
        node does it): see :meth:`~dispatcher.cluster.peers.Peers.holder`."""
        if self.peers is None or not self.peers.enabled:
            return None
        return self.peers.holder(self.store.job(job_id), what)

    def cancel(self, job_id: int) -> ActionResult:
        if (holder := self.elsewhere(job_id, "cancel")) is not None:
            assert self.peers is not None
            return self.peers.action(holder, job_id, "cancel")
        with self.lock(job_id):
            job = self.store.job(job_id)
            if job.state is JobState.CANCELED:
                return action_result(self.store, job, False, f"job {job_id} is already canceled")
            if job.state not in ACTIVE:
                raise InvalidState(
                    f"job {job_id} already finished ({job.state.value}); nothing to cancel",
                    details={"state": job.state.value},
                )
            job = self._stop(job)
            if job.state is JobState.CANCELED:
                return action_result(self.store, job, True, f"job {job_id} canceled")
            if job.state in ACTIVE:
                return action_result(
                    self.store, job, True, f"job {job_id}: cancel requested, stopping"
                )
            return action_result(
                self.store, job, False,
                f"job {job_id} finished ({job.state.value}) before it was canceled",
            )  # fmt: skip

    def discard(self, job_id: int, *, expected_tip: str | None = None) -> ActionResult:
        """``expected_tip``: discard only if the job's branch is still at that commit (what
        prune counted the commits of); nothing is touched if it moved."""
        if (holder := self.elsewhere(job_id, "discard")) is not None:
            assert self.peers is not None
            if expected_tip is not None:  # what this node counted is not what is there
                raise InvalidState(
                    f"job {job_id} is held by node {holder.name}: prune it on that node"
                )
            return self.peers.action(holder, job_id, "discard")
        with self.lock(job_id):
            job = self.store.job(job_id)
            if job.state is JobState.DISCARDED:
                return action_result(self.store, job, False, f"job {job_id} is already discarded")
            refuse_continued(job)
            if job.state is JobState.MERGED:
                raise InvalidState(
                    f"job {job_id} is merged into {job.merged_into}; nothing to discard",
                    details={"state": job.state.value},
                )
            if job.state in ACTIVE:
                job = self._stop(job)
                if job.state in ACTIVE:
                    raise InvalidState(
                        f"job {job_id} did not stop in time; nothing was removed, try again"
                    )
            assert job.id is not None
            repo = self.store.repo(job.repo_id)
            repo_path = Path(repo.path)
            if expected_tip is not None:
                now = refs.branch_head(repo_path, job.branch)
                if now != expected_tip:
                    raise RefMoved(
                        f"job {job_id}'s branch {job.branch} moved since its commits were "
                        f"counted (now {(now or 'gone')[:12]}, was {expected_tip[:12]}); kept"
                    )
            if job.worktree:
                self._drop_worktree(repo, job.id, Path(job.worktree))
            if job.branch and (repo_path / ".git").exists():
                worktrees.delete_branch(repo_path, job.branch, expected=expected_tip)
            job = self.store.move(
                job.id, set(FINISHED) | {JobState.QUEUED}, JobState.DISCARDED,
                worktree=None, closed_at=utcnow(),
            )  # fmt: skip
            self.notices.announce(job)
            self._closed(job)
            return action_result(
                self.store, job, True, f"job {job_id} discarded: worktree and branch removed"
            )

    def merge(
        self, job_id: int, req: MergeRequest, *, landed: Callable[[Job], None] | None = None
    ) -> ActionResult:
        """``landed``: told as soon as the merge is recorded (see :func:`land`)."""
        try:
            holder = self.elsewhere(job_id, "merge")
        except NodeUnavailable as down:
            return self._merge_from_hub(job_id, req, down, landed=landed)
        if holder is not None:
            assert self.peers is not None
            result = self.peers.action(holder, job_id, "merge", req)
            if landed is not None and result.job.state is JobState.MERGED:
                landed(self.store.job(job_id))
            return result
        with self.lock(job_id):
            job = self.store.job(job_id)
            refuse_continued(job)
            repo = self.store.repo(job.repo_id)
            assert job.id is not None
            job_id_ = job.id
            remote = self.hub_name(repo)
            hub = hub_of(self.settings, Path(repo.path), remote) if remote else None
            job, changed, message = land(
                self.settings, self.store, job, repo, req,
                drop=lambda path: self._drop_worktree(repo, job_id_, path), landed=landed,
                hub=hub,
            )  # fmt: skip
            if changed and job.state is JobState.MERGED:
                self.notices.announce(job)
                self._closed(job)
            return action_result(self.store, job, changed, message)

    def _merge_from_hub(
        self,
        job_id: int,
        req: MergeRequest,
        down: NodeUnavailable,
        *,
        landed: Callable[[Job], None] | None,
    ) -> ActionResult:
        """Merge a finished job whose node is not running from its branch on the repo's
        hub (docs/cluster.md, "A dead node's finished jobs"), in this node's clone: the
        merge is the hub's as any node's (fetch, ``merge-tree``, a push with a lease).
        The job's worktree, left on its node, is no longer the job's: that node's sweep
        saves what it holds and removes it at its next start. ``down`` is raised when
        the job cannot be merged so: its repo has no hub, its head (as recorded) was not
        pushed there, or the hub's branch is not at it now."""
        with self.lock(job_id):
            job = self.store.job(job_id)
            if job.state not in FINISHED:
                raise down
            refuse_continued(job)  # a follow-up goes on from it (on that node)
            repo = self.store.repo(job.repo_id)  # NotFound: no clone here either
            remote = self.hub_name(repo)
            # Its head not on the hub (a rebase there since the push): not from the hub.
            if remote is None or job.hub_sha is None or job.hub_sha != job.head_sha:
                raise down
            hub = hub_of(self.settings, Path(repo.path), remote)
            there = git_remote.fetch_branch(
                Path(repo.path), remote, job.branch, credentials=hub.credentials,
                timeout=hub.timeout,
            )  # fmt: skip
            if there != job.hub_sha:
                raise NodeUnavailable(
                    f"{down.message}; its branch on the hub {remote} is "
                    f"{there[:12] if there else 'gone'}, not the {job.hub_sha[:12]} it ended "
                    "with, so it is not merged from there",
                    details=down.details,
                )
            job, changed, message = land(
                self.settings, self.store, job, repo, req, drop=lambda path: None,
                landed=landed, hub=hub, source=there,
            )  # fmt: skip
            if changed and job.state is JobState.MERGED:
                node = down.details.get("name") or down.details.get("node")
                message += (
                    f", from its branch there (node {node}, which holds its worktree, is not "
                    "running: that node drops the worktree at its next start)"
                )
                self.notices.announce(job)
                self._closed(job)
            return action_result(self.store, job, changed, message)

    def merged_on_forge(self, job_id: int, into: str) -> ActionResult:
        """The job's pull request was merged on its forge: the job is ``merged`` into
        ``into`` there (nothing lands locally), its worktree released as a merge's is
        (the branch kept, as ``merge`` keeps it), a run still going stopped first.
        Repeating it changes nothing."""
        with self.lock(job_id):
            job = self.store.job(job_id)
            if job.state is JobState.MERGED:
                return action_result(self.store, job, False, f"job {job_id} is already merged")
            refuse_continued(job)
            if job.state is JobState.DISCARDED:
                raise InvalidState(f"job {job_id} is discarded; it cannot be merged")
            if job.state in ACTIVE:
                job = self._stop(job)
                if job.state in ACTIVE:
                    raise InvalidState(f"job {job_id} did not stop in time; try again")
            assert job.id is not None
            if job.worktree:
                self._drop_worktree(self.store.repo(job.repo_id), job.id, Path(job.worktree))
            job = self.store.move(
                job.id, set(FINISHED), JobState.MERGED, worktree=None, merged_into=into,
                pr_state="merged", closed_at=utcnow(),
            )  # fmt: skip
            self.notices.announce(job)
            self._closed(job)
            return action_result(
                self.store, job, True, f"job {job_id}: its pull request was merged into {into}"
            )

    def recover_merges(self, node: str | None = None) -> None:
        """At start-up, before any job runs or merge is accepted: finish or undo the
        merges a crashed daemon left under way (their journals are in this node's state
        dir), then mark merged the finished jobs (``node``: of this node) whose work
        their target already holds. Each job newly merged gives up its worktree and is
        announced. Never raises."""
        try:
            hub_for = partial(hub_of, self.settings)
            jobs = recover(self.settings, self.store, hub_for) + reconcile(self.store, node)
        except Exception:
            log.exception("recovering merges failed")
            return
        for job in jobs:
            assert job.id is not None
            try:
                if job.worktree:
                    repo = self.store.repo(job.repo_id)
                    self._drop_worktree(repo, job.id, Path(job.worktree))
                    job = self.store.update(job.id, worktree=None)
            except Exception:
                log.exception("job %s: cleanup after a recovered merge failed", job.id)
            self.notices.announce(job)
            self._closed(job)

    def _closed(self, job: Job) -> None:
        if self.on_closed is not None:
            self.on_closed(job)

    def _drop_worktree(self, repo: Repo, job_id: int, worktree: Path) -> None:
        """A job is done with its worktree: back to the warm pool, or removed.

        Either way its uncommitted edits are saved to ``refs/dispatcher/released/<id>``.
        """
        ws = Workspace.model_validate(self.store.job(job_id).workspace or {})
        checkouts = [Path(r.path) for r in self.store.repos()]
        run_cleanup(self.settings, job_id, ws, worktree, checkouts=checkouts)
        limit = ws.max_leftover_bytes(self.settings.max_leftover_file_mb)
        saved = None
        repo_path = Path(repo.path)
        if self.pool is not None and (repo_path / ".git").exists():
            saved = self.pool.release(
                repo, worktree, job_id=job_id, exclude=ws.never_commit(), max_file_bytes=limit
            )
        else:
            if worktree.is_dir() and worktrees.is_valid(worktree, repo_path):
                saved = save_released(self.settings, worktree, job_id, ws.never_commit(), limit)
            worktrees.remove(repo_path, worktree)
        if self.disk_use is not None:
            self.disk_use.touch(repo.name)
        note = left_out_note(released_ref(job_id), saved) if saved else ""
        if note:
            note_job(self.settings, job_id, note)

    def _stop(self, job: Job) -> Job:
        """Stop an active job: queued ones directly, claimed ones through the runner."""
        job_id = job.id
        assert job_id is not None
        if job.state is JobState.QUEUED:
            try:
                ended = self.store.move(
                    job_id, JobState.QUEUED, JobState.CANCELED,
                    finished_at=utcnow(), error="canceled on request",
                )  # fmt: skip
            except DispatcherError:
                job = self.store.job(job_id)  # claimed meanwhile: stop it via the runner
                if job.state not in ACTIVE:
                    return job
            else:
                if self.on_unrun is not None:
                    self.on_unrun(job_id, ended)
                return ended
        self.store.update(job_id, cancel_requested=True)
        self.supervisor.cancel(job_id)
        self.supervisor.join(job_id, timeout=self.settings.kill_grace_seconds + 15)
        return self.store.job(job_id)


def refuse_continued(job: Job) -> None:
    """A job a follow-up continued is acted on through that follow-up."""
    if job.followed_by is not None:
        raise InvalidState(
            f"job {job.id} was continued by follow-up job {job.followed_by}, which holds "
            f"its worktree and branch now; act on job {job.followed_by}"
        )


def action_result(store: Store, job: Job, changed: bool, message: str) -> ActionResult:
    return ActionResult(
        job=JobPublic.of(job, store.repo(job.repo_id).name), changed=changed, message=message
    )
