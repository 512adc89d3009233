"""The busy jobs of dead workers of other nodes, taken over at start (docs/cluster.md).

A job ``preparing`` or ``running`` on a node that is gone cannot be re-adopted: its agent,
worktree and branch are on that node's machine. It is moved by a compare-and-set guarded
on the dead worker's id and the job's attempt (:class:`~dispatcher.store.owners.Guard`),
so that of two starts taking over at once exactly one moves each job, and a dead worker
that comes back writes nothing into the attempt that follows: re-queued (attempt + 1,
after the retry backoff) while it has attempts left, else ended (``canceled`` when a cancel
was asked, ``failed`` otherwise; a follow-up too, whose worktree is on the dead node). It
then carries the taking worker's id (so a write of the dead worker's fails its guard even
when the attempt ended here) and no worktree; one ended here names the dead node as its
``node``, whose clone has its branch (what a merge, discard or prune of it needs). Nothing
on disk is touched: none of it is here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from dispatcher.config import Settings
from dispatcher.jobs.files import note_job
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Job, utcnow
from dispatcher.store.owners import Guard, TakenOver
from dispatcher.store.workers import WorkerStore

log = logging.getLogger(__name__)

BUSY = (JobState.PREPARING, JobState.RUNNING)


@dataclass(frozen=True)
class Taken:
    """A job this start took over: its id and the state it moved it to."""

    job_id: int
    state: JobState


def take_over(settings: Settings, store: Store, me: int | None, dead: list[int]) -> list[Taken]:
    """Take over the busy jobs of the workers ``dead`` (:meth:`WorkerStore.dead`); the
    jobs this start moved (another start may have taken some first: those are skipped)."""
    taken: list[Taken] = []
    for job in store.jobs_of_workers(dead, BUSY):
        assert job.id is not None
        try:
            state = _take(settings, store, me, job)
        except TakenOver:
            log.info("job %s: taken over by another worker first", job.id)
            continue
        except Exception:
            log.exception("job %s: could not be taken over from worker %s", job.id, job.worker_id)
            continue
        taken.append(Taken(job.id, state))
    return taken


def _take(settings: Settings, store: Store, me: int | None, job: Job) -> JobState:
    assert job.id is not None
    why = f"its worker {job.worker_id} (another node) is not alive"
    # Its worktree is on the dead node (whose sweeper keeps what it holds, unclaimed now).
    gone = {"pid": None, "pid_start": None, "worker_id": me, "worktree": None}
    guard = Guard.of(job)
    if job.cancel_requested:
        target, fields = JobState.CANCELED, {"finished_at": utcnow(), "error": f"{why}; canceled"}
    elif job.attempt < job.max_attempts and job.followup_of is None:
        target = JobState.QUEUED
        delay = settings.retry_backoff_seconds * 2 ** (job.attempt - 1)
        fields = {
            "attempt": job.attempt + 1,
            "not_before": utcnow() + timedelta(seconds=delay),
            "started_at": None,
            "spawn_nonce": None,
            "error": f"{why}; re-queued as attempt {job.attempt + 1} of {job.max_attempts}",
        }
    else:
        where = " (a follow-up's worktree is on that node)" if job.followup_of else ""
        target = JobState.FAILED
        fields = {"finished_at": utcnow(), "error": f"{why}; attempt {job.attempt} lost{where}"}
    if target is not JobState.QUEUED and job.worker_id is not None:
        # Ended here, its branch (with what the agent committed) is still in the dead
        # node's clone: that node holds it (Peers.node_of), not this one.
        fields["node"] = job.node or WorkerStore(store).node_of(job.worker_id)
    store.move(job.id, {JobState.PREPARING, JobState.RUNNING}, target, guard=guard,
               **gone, **fields)  # fmt: skip
    said = f"taken over from worker {job.worker_id} (its node is not alive): {target.value}"
    note_job(settings, job.id, said)  # in this node's copy of the job's log
    log.info("job %s: %s", job.id, said)
    return target
