"""What a job's agent left, recorded: its leftovers committed, its branch measured, its end state.

:func:`collect` commits what the agent left uncommitted on its branch and
measures the branch against the job's base; :func:`outcome` decides, from how
the agent ended and the problems found, the state the job ends in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.errors import InvalidInput
from dispatcher.git import commits, dotgit, rebase, refs, worktrees
from dispatcher.jobs.files import note_job
from dispatcher.jobs.workspace import Workspace
from dispatcher.lifecycle import JobState
from dispatcher.process import proc
from dispatcher.store.models import Job

_MIB = 1024 * 1024


def _mb(size: float) -> str:
    """``size`` bytes in MB (MiB), one decimal where it matters: "200 MB", "50.5 MB"
    (KB below one MB)."""
    if size < _MIB:
        return f"{size / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{size / _MIB:.1f}".removesuffix(".0") + " MB"


def _listed(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def collect(
    settings: Settings, job: Job, repo_path: Path, *, timed_out: bool = False
) -> tuple[dict[str, object], str]:
    """Commit what the agent left, then measure the branch against its base.

    When a merge ``dispatcher rebase`` started is under way in the worktree, the commit
    is that merge: it is made only if the agent ended on its own and no conflict
    markers are left in the files it stopped at (:func:`_merge_unfinished`).

    Returns the result fields and a problem that fails the job ("" if none).
    """
    assert job.id is not None and job.worktree is not None
    worktree = Path(job.worktree)
    if not worktree.is_dir():
        raise InvalidInput(f"worktree {worktree} vanished while the agent ran")
    foreign = dotgit.foreign_worktree(worktree, repo_path)
    if foreign:
        raise InvalidInput(foreign)
    branch = worktrees.current_branch(worktree)
    problem = ""
    if branch == job.branch:
        problem = _merge_unfinished(settings, job, worktree, timed_out=timed_out)
        if not problem:
            problem = _commit_leftovers(settings, job, worktree)
    else:
        where = branch or "a detached HEAD"
        problem = (
            f"the agent left its worktree on {where} instead of {job.branch}; "
            "its uncommitted changes were left in place, not committed"
        )
    head = refs.branch_head(repo_path, job.branch)
    if head is None:
        raise InvalidInput(f"the agent deleted its branch {job.branch}")
    stats = refs.branch_stats(repo_path, job.base_sha, head)
    fields: dict[str, object] = {
        "head_sha": head,
        "commits_ahead": stats.ahead,
        "files_changed": stats.diff.files,
        "insertions": stats.diff.insertions,
        "deletions": stats.diff.deletions,
    }
    if not problem and not stats.contains_base:
        problem = (
            f"the agent rewrote history: {job.branch} no longer contains its base "
            f"{job.base_sha[:12]}; the branch is kept as the agent left it"
        )
    return fields, problem


def _merge_unfinished(settings: Settings, job: Job, worktree: Path, *, timed_out: bool) -> str:
    """Why the merge of the target a rebase left under way in ``worktree`` (for this
    job, a follow-up, to resolve) is not committed, "" when it may be (or there is
    none). Not committed, and left in place with the agent's work: a job canceled or
    timed out, and files that still hold conflict markers."""
    assert job.id is not None
    if not rebase.ours_under_way(worktree):
        return ""
    kept = f"the merge of {job.target_branch} is left under way in {worktree}, not committed"
    if job.cancel_requested or timed_out:
        why = "canceled" if job.cancel_requested else "timed out"
        note_job(settings, job.id, f"the job {why}: {kept}")
        return f"canceled on request; {kept}" if job.cancel_requested else kept
    left = rebase.markers_left(worktree)
    if not left:
        return ""
    return f"conflicts left in {_listed(left)}; {kept}"


def _commit_leftovers(settings: Settings, job: Job, worktree: Path) -> str:
    """Commit what the agent left uncommitted on its branch; a problem that fails the
    job ("" if none) when files over the size limit had to be left out."""
    assert job.id is not None
    first_line = (job.prompt.strip().splitlines() or [""])[0][:200]
    ws = Workspace.model_validate(job.workspace or {})
    limit_mb, setting = settings.max_leftover_file_mb, "DISPATCHER_MAX_LEFTOVER_FILE_MB"
    if ws.max_leftover_file_mb is not None:
        limit_mb = ws.max_leftover_file_mb
        setting = "max-leftover-file-mb in the repo's .dispatcher/triggers.yml"
    limit = ws.max_leftover_bytes(settings.max_leftover_file_mb)
    done = commits.commit_leftovers(
        worktree,
        f"dispatcher: changes left uncommitted by job {job.id}\n\nPrompt: {first_line}",
        author_name=settings.commit_author_name,
        author_email=settings.commit_author_email,
        exclude=ws.never_commit(),
        max_file_bytes=limit,
    )
    if done.ignored:
        note_job(
            settings,
            job.id,
            "not committed, though staged: files the repo's ignore rules match "
            f"(left in the worktree): {_listed(done.ignored)}",
        )
    if not done.too_big:
        return ""
    files = _listed([f"{path} ({_mb(size)})" for path, size in done.too_big])
    return (
        f"left uncommitted, over the {_mb(limit_mb * _MIB)} limit for automatic commits: "
        f"{files}; commit them yourself in the worktree or raise {setting}"
    )


def outcome(
    job: Job, code: int | None, *, timed_out: bool, problem: str
) -> tuple[JobState, str | None]:
    """The state a running job ends in, and its error (None if it succeeded): a cancel
    wins, then a timeout, then ``problem`` (what the daemon found wrong), then the
    agent's exit status."""
    if job.cancel_requested:
        return JobState.CANCELED, problem or "canceled on request"
    if timed_out:
        return (
            JobState.TIMED_OUT,
            f"timed out after {job.timeout_s:g}s; the agent's process tree was killed",
        )
    if problem:
        return JobState.FAILED, problem
    if code == 0:
        return JobState.SUCCEEDED, None
    return JobState.FAILED, f"agent ended with {proc.describe_status(code)}"
