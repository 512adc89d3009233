"""Jobs a previous daemon left ``preparing`` or ``running``: did their agent start, re-queue them.

Agents run in their own session (see :mod:`dispatcher.process.proc`), so they
outlive a daemon crash. At start the runner re-adopts the ones still alive
(pid + kernel start time), records how the others ended (from the exit-status
file their wrapper writes), and re-queues jobs caught while preparing
(:func:`undo_preparing`) and lost ones that have attempts left (:func:`requeue`).

Exactly once: each spawn has a nonce, recorded on the job before the agent is
spawned. The agent's wrapper claims ``jobs/<id>/spawn-<nonce>`` (an exclusive
create) before it runs the agent; a daemon that finds the job still
``preparing`` after a crash claims the same file itself (:func:`spawn_started`).
Whoever creates it first wins: if the daemon does, that agent can never run and
the job is re-queued; if the wrapper did, its agent is adopted as running.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.git import commits, dotgit, refs, worktrees
from dispatcher.jobs.cleanup import remove_worktree
from dispatcher.jobs.files import job_files, note_job, worktree_path
from dispatcher.jobs.job_cgroups import JobCgroups
from dispatcher.jobs.leftovers import left_out_note
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import JobState
from dispatcher.process import proc
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo, utcnow
from dispatcher.store.owners import Guard


def spawn_started(settings: Settings, store: Store, job: Job) -> Job | None:
    """For a job left ``preparing``: did its agent start? None if it never did and
    now never can (this daemon holds its claim); else the job, moved to ``running``
    with the agent's pid (None if it has ended already)."""
    assert job.id is not None
    if job.spawn_nonce is None:
        return None  # no spawn was about to start
    claim = job_files(settings, job.id).claim(job.spawn_nonce)
    claim.parent.mkdir(parents=True, exist_ok=True)
    if proc.take_claim(claim):
        return None
    pid = proc.claim_holder(claim)
    if pid is None:
        return None  # an earlier daemon's claim, or a wrapper that died claiming
    start = proc.runs_spawn(pid, claim)  # None: it has ended (or the pid is another's)
    started = datetime.fromtimestamp(claim.stat().st_mtime, UTC)
    how = f"it runs as pid {pid}: adopted" if start is not None else "it has ended"
    note_job(settings, job.id, f"daemon restarted while the agent was starting; {how}")
    # The worktree's path is written with the move to running, which never came: it is
    # the job's own (a follow-up's was its parent's, recorded when it was made).
    worktree = job.worktree or str(worktree_path(settings, store.repo(job.repo_id), job.id))
    return store.move(
        job.id, JobState.PREPARING, JobState.RUNNING, guard=Guard.of(job),
        pid=pid if start is not None else None, pid_start=start, started_at=started,
        worktree=worktree,
    )  # fmt: skip


def undo_preparing(
    settings: Settings, store: Store, job_cgroups: JobCgroups, job: Job, repo: Repo
) -> None:
    """No agent ran: queue the job again (undoing the half-made worktree)."""
    assert job.id is not None
    job_cgroups.end(job)  # a wrapper that lost its claim may still be in it
    if job.followup_of is not None:
        # A follow-up's worktree holds the earlier runs' work: keep it, run again.
        store.move(
            job.id, JobState.PREPARING, JobState.QUEUED, guard=Guard.of(job), spawn_nonce=None
        )
    else:
        remove_worktree(Path(repo.path), worktree_path(settings, repo, job.id), job.branch)
        store.move(
            job.id, JobState.PREPARING, JobState.QUEUED, guard=Guard.of(job), worktree=None,
            spawn_nonce=None,
        )  # fmt: skip
    note_job(settings, job.id, "daemon restarted while preparing: re-queued")


def requeue(settings: Settings, store: Store, job: Job, repo: Repo, reason: str) -> None:
    """Run a lost job again (attempt + 1, after a backoff), keeping what it had done.

    Its worktree state (commits and uncommitted files) is saved to
    ``refs/dispatcher/attempts/<id>/<attempt>``; then the worktree and branch
    are removed so the next attempt starts clean from the same base.
    """
    assert job.id is not None
    repo_path = Path(repo.path)
    ref = f"refs/dispatcher/attempts/{job.id}/{job.attempt}"
    worktree = Path(job.worktree) if job.worktree else None
    saved = None
    if (
        worktree is not None
        and worktree.is_dir()
        and not dotgit.foreign_worktree(worktree, repo_path)
        and worktrees.is_valid(worktree)
    ):
        ws = Workspace.model_validate(job.workspace or {})
        done = commits.snapshot_worktree(
            worktree,
            ref,
            f"dispatcher: job {job.id} attempt {job.attempt}, interrupted",
            author_name=settings.commit_author_name,
            author_email=settings.commit_author_email,
            exclude=ws.never_commit(),
            max_file_bytes=ws.max_leftover_bytes(settings.max_leftover_file_mb),
        )
        saved = done.sha
        if note := left_out_note(ref, done):
            note_job(settings, job.id, note)
    if saved is None:  # nothing uncommitted: keep the branch's own commits, if any
        head = refs.branch_head(repo_path, job.branch)
        if head is not None and head != job.base_sha:
            commits.update_ref(repo_path, ref, head)
            saved = head
    if worktree is not None:
        remove_worktree(repo_path, worktree, job.branch)
    else:
        worktrees.delete_branch(repo_path, job.branch)
    delay = settings.retry_backoff_seconds * 2 ** (job.attempt - 1)
    where = f"; its work is saved at {ref}" if saved else ""
    store.move(
        job.id,
        JobState.RUNNING,
        JobState.QUEUED,
        guard=Guard.of(job),
        attempt=job.attempt + 1,
        not_before=utcnow() + timedelta(seconds=delay),
        worktree=None,
        pid=None,
        pid_start=None,
        started_at=None,
        error=f"{reason}; re-queued as attempt {job.attempt + 1} of {job.max_attempts}{where}",
    )
    note_job(
        settings,
        job.id,
        f"{reason}: re-queued (attempt {job.attempt + 1} of {job.max_attempts}, "
        f"in {delay:g}s){where}",
    )
