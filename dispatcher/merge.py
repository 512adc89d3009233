"""Landing a finished job on its target branch.

The git work (conflict check with ``merge-tree --write-tree``, building the
new commit without a worktree, moving the ref by compare-and-swap, refusing a
dirty checkout) is :func:`dispatcher.git.merge`. This module decides whether a
job may be merged, records the result, and cleans up after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dispatcher import git
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidState
from dispatcher.lifecycle import FINISHED, JobState
from dispatcher.models import Job, MergeRequest, Repo, utcnow
from dispatcher.store import Store

log = logging.getLogger(__name__)


def commit_message(job: Job, strategy: str) -> str:
    subject = (job.prompt.strip().splitlines() or ["(no prompt)"])[0][:72]
    body = f"Dispatcher job {job.id} ({job.agent}), branch {job.branch}."
    if strategy == "merge":
        return f"Merge job {job.id}: {subject}\n\n{body}\n"
    return f"{subject}\n\n{body}\n"


def land(
    settings: Settings,
    store: Store,
    job: Job,
    repo: Repo,
    req: MergeRequest,
    drop: Callable[[Path], None],
) -> tuple[Job, bool, str]:
    """Merge ``job``; returns the job, whether anything changed, and a message.

    ``drop`` takes the job's worktree away afterwards (back to the warm pool, or
    removed), saving any uncommitted edits to a ref first.
    """
    job_id = job.id
    assert job_id is not None
    if job.state is JobState.MERGED:
        return job, False, f"job {job.id} is already merged into {job.merged_into}"
    if job.state not in FINISHED:
        hint = (
            "wait for it to finish" if job.state.value in ("queued", "preparing", "running") else ""
        )
        raise InvalidState(
            f"job {job.id} is {job.state.value}; only a finished job can be merged"
            + (f" ({hint})" if hint else ""),
            details={"state": job.state.value},
        )
    repo_path = Path(repo.path)
    head = git.branch_head(repo_path, job.branch)
    if head is None:
        raise InvalidState(f"job {job.id}: its branch {job.branch} no longer exists")
    if head == job.base_sha:
        raise InvalidState(f"job {job.id} made no commits; nothing to merge (discard it instead)")
    target = git.validate_branch_name(req.into or job.target_branch)
    new = git.merge(
        repo_path,
        strategy=req.strategy,
        target_branch=target,
        source=head,
        base=job.base_sha,
        message=commit_message(job, req.strategy),
        author_name=settings.commit_author_name,
        author_email=settings.commit_author_email,
        worktrees_dir=settings.worktrees_dir,
    )
    job = store.move(
        job_id,
        set(FINISHED),
        JobState.MERGED,
        head_sha=head,
        merged_sha=new,
        merged_into=target,
        merge_strategy=req.strategy,
        closed_at=utcnow(),
    )
    # The result is landed; cleanup failures are logged, never undo the merge.
    try:
        if job.worktree:
            drop(Path(job.worktree))
            job = store.update(job_id, worktree=None)
        if req.delete_branch:
            git.delete_branch(repo_path, job.branch)
    except DispatcherError as exc:
        log.warning("job %s: cleanup after merge failed: %s", job.id, exc.message)
    how = {"ff": "fast-forwarded", "merge": "merged", "squash": "squashed", "rebase": "rebased"}
    return job, True, f"job {job.id} {how[req.strategy]} into {target} at {new[:12]}"
