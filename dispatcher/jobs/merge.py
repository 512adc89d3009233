"""Landing a finished job on its target branch.

The git work (conflict check with ``merge-tree --write-tree``, building the
new commit without a worktree, moving the ref by compare-and-swap, refusing a
dirty checkout) is :func:`dispatcher.git.merge.merge`. This module decides whether a
job may be merged, records the result, and cleans up after it; at start-up it
finishes what a crashed daemon's merges left (:func:`recover`) and marks jobs
merged whose work the target branch already holds (:func:`reconcile`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dispatcher import faults
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidState
from dispatcher.git import journal as merge_journal
from dispatcher.git import merge, names, refs, worktrees
from dispatcher.lifecycle import FINISHED, JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Job, MergeRequest, Repo, utcnow

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
    landed: Callable[[Job], None] | None = None,
    hub: merge.Hub | None = None,
    source: str | None = None,
) -> tuple[Job, bool, str]:
    """Merge ``job``; returns the job, whether anything changed, and a message.

    ``hub``: the repo's hub (docs/cluster.md): the merge is pushed there, and the
    local target follows it. ``source``: the commit merged, when it is not the job's
    branch in this clone (its branch fetched from the hub: the job's node is down);
    the job's branch is then not this clone's to delete.

    ``drop`` takes the job's worktree away afterwards (back to the warm pool, or
    removed), saving any uncommitted edits to a ref first. ``landed`` is told of the
    job as soon as its merge is recorded, before that cleanup (a team starts the
    tasks that waited for it); what it raises is logged, never undoes the merge.
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
    head = source or refs.branch_head(repo_path, job.branch)
    if head is None:
        raise InvalidState(f"job {job.id}: its branch {job.branch} no longer exists")
    if head == job.base_sha:
        raise InvalidState(f"job {job.id} made no commits; nothing to merge (discard it instead)")
    target = names.validate_branch_name(req.into or job.target_branch)
    journal = journal_path(settings, job_id)
    new = merge.merge(
        repo_path,
        strategy=req.strategy,
        target_branch=target,
        source=head,
        base=job.base_sha,
        message=commit_message(job, req.strategy),
        author_name=settings.commit_author_name,
        author_email=settings.commit_author_email,
        journal=journal,
        label=str(job_id),
        hub=hub,
    )
    faults.reach("merge.landed")  # the target moved; the job does not say so yet
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
    merge_journal.discard(journal)  # recorded: nothing left for a restart to finish
    if landed is not None:
        try:
            landed(job)
        except Exception:
            log.exception("job %s: what waited for its merge failed", job_id)
    # The result is landed; cleanup failures are logged, never undo the merge.
    try:
        if job.worktree:
            drop(Path(job.worktree))
            job = store.update(job_id, worktree=None)
        if req.delete_branch and source is None:
            worktrees.delete_branch(repo_path, job.branch)
    except DispatcherError as exc:
        log.warning("job %s: cleanup after merge failed: %s", job.id, exc.message)
    how = {"ff": "fast-forwarded", "merge": "merged", "squash": "squashed", "rebase": "rebased"}
    where = f" on the hub {hub.remote}" if hub is not None else ""
    return job, True, f"job {job.id} {how[req.strategy]} into {target}{where} at {new[:12]}"


def journal_path(settings: Settings, job_id: int) -> Path:
    """Where the merge of job ``job_id`` keeps its journal while it is under way."""
    return settings.merges_dir / f"{job_id}.json"


def recover(
    settings: Settings, store: Store, hub_for: Callable[[Path, str], merge.Hub] | None = None
) -> list[Job]:
    """Finish or undo the merges a crashed daemon left under way; the jobs now merged.

    Each journal's checkout is put back as it was or as the merge makes it
    (:func:`dispatcher.git.merge.recover_landing`); a job whose target holds the merge
    result is recorded ``merged``. A merge by push (its journal names a hub) landed
    when the hub's target holds it (asked now, through ``hub_for(repo, remote)``); the
    local target then follows. A journal that cannot be read or acted on is moved
    aside with a log line: it never stops the daemon from starting.
    """
    merged: list[Job] = []
    for path in merge_journal.pending(settings.merges_dir):
        try:
            landing = merge_journal.read(path)
            landed = merge.recover_landing(landing)
            if landing.hub is not None:
                if hub_for is None:
                    raise InvalidState(f"the merge by push to {landing.hub} cannot be asked")
                hub = hub_for(Path(landing.repo), landing.hub)
                landed = merge.hub_landed(landing, hub, path)
            if landed:
                job = _record_recovered(store, landing)
                if job is not None:
                    merged.append(job)
        except (ValueError, OSError, DispatcherError) as exc:
            message = exc.message if isinstance(exc, DispatcherError) else str(exc)
            try:
                aside = merge_journal.move_aside(path)
            except OSError:
                aside = path
            log.warning("merge journal %s not recovered (kept at %s): %s", path, aside, message)
            continue
        merge_journal.discard(path)
    return merged


def _record_recovered(store: Store, landing: merge_journal.Landing) -> Job | None:
    """Mark the landing's job merged (if it still waits for it); None when not. A
    rebase's (label ``rebase-N``) is recorded on job N as the rebase would have."""
    rebased = landing.label.removeprefix("rebase-")
    if rebased != landing.label and rebased.isdigit():
        _record_rebase(store, int(rebased), landing)
        return None
    if not landing.label.isdigit():
        log.warning("merge journal of %r names no job", landing.label)
        return None
    job_id = int(landing.label)
    try:
        job = store.move(
            job_id,
            set(FINISHED),
            JobState.MERGED,
            head_sha=landing.source,
            merged_sha=landing.new,
            merged_into=landing.target,
            merge_strategy=landing.strategy,
            closed_at=utcnow(),
        )
    except DispatcherError as exc:  # already merged, discarded, or gone
        log.info("job %s: merge recovered, job left as it is: %s", job_id, exc.message)
        return None
    log.info("job %s: merge into %s finished after a restart", job_id, landing.target)
    return job


def _record_rebase(store: Store, job_id: int, landing: merge_journal.Landing) -> None:
    """Record on job ``job_id`` the rebase a crash cut short after its branch moved:
    its base (``rebased_onto``) the journal's ``onto``, its head the new tip, its
    diffstat measured again."""
    onto = landing.onto
    if onto is None or not names.is_full_sha(onto):
        raise InvalidState(f"rebase journal of job {job_id} names no commit it was brought onto")
    try:
        job = store.job(job_id)
    except DispatcherError as exc:
        log.info("job %s: rebase recovered, job left as it is: %s", job_id, exc.message)
        return
    stats = refs.branch_stats(Path(landing.repo), onto, landing.new)
    store.update(
        job_id, base_sha=onto, rebased_onto=onto, rebased_at=utcnow(), head_sha=landing.new,
        commits_ahead=stats.ahead, files_changed=stats.diff.files,
        insertions=stats.diff.insertions, deletions=stats.diff.deletions,
    )  # fmt: skip
    log.info("job %s: rebase of %s onto %s recorded after a restart", job_id, job.branch, onto[:12])


def reconcile(store: Store, node: str | None = None) -> list[Job]:
    """Mark ``merged`` every finished job with commits whose head its target already
    contains (merged by hand, or by a daemon that crashed before recording it).

    One ``git for-each-ref --merged`` per repository and target; a job whose branch
    is gone is checked by its recorded head. Jobs with no commits (recorded head
    at the base) are not even read. ``node``: only that node's jobs (their branches are
    in its clones).
    """
    merged: list[Job] = []
    groups: dict[tuple[int, str], list[Job]] = {}
    for job in store.finished_with_commits(node):
        groups.setdefault((job.repo_id, job.target_branch), []).append(job)
    for (repo_id, target), jobs in groups.items():
        try:
            repo_path = Path(store.repo(repo_id).path)
            if refs.branch_head(repo_path, target) is None:
                continue
            contained = refs.branches_merged_into(repo_path, target)
            for job in jobs:
                if _contained(repo_path, job, target, contained):
                    done = _record_contained(store, job, target)
                    if done is not None:
                        merged.append(done)
        except DispatcherError as exc:
            log.warning(
                "repo %s: cannot tell which jobs %s holds: %s", repo_id, target, exc.message
            )
    return merged


def _contained(repo: Path, job: Job, target: str, contained: dict[str, str]) -> bool:
    """True if ``target`` holds the job's commits: its branch's tip (or, when the branch
    is gone, its recorded head). A job with no commits is never "merged"."""
    head = contained.get(job.branch)
    if head is not None:
        return head != job.base_sha
    if refs.branch_head(repo, job.branch) is not None:
        return False  # the branch exists and its tip is not in the target
    head = job.head_sha
    if head is None or head == job.base_sha or not names.is_full_sha(head):
        return False
    return refs.is_ancestor(repo, head, target)


def _record_contained(store: Store, job: Job, target: str) -> Job | None:
    assert job.id is not None
    try:
        moved = store.move(
            job.id, set(FINISHED), JobState.MERGED, merged_into=target, closed_at=utcnow()
        )
    except DispatcherError as exc:
        log.info("job %s: left as it is: %s", job.id, exc.message)
        return None
    log.info("job %s: its work is already in %s: marked merged", job.id, target)
    return moved
