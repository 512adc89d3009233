"""What a job's worktree held that no commit did: saved to a ref before the worktree
goes, and the log line naming what could not be saved (too big, force-added ignored)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.git import commits


def save_released(
    settings: Settings,
    worktree: Path,
    job_id: int,
    exclude: Sequence[str] = (),
    max_file_bytes: int | None = None,
) -> commits.Leftovers:
    """Save uncommitted edits in a job's worktree to ``refs/dispatcher/released/<id>``
    before the worktree goes (back to the pool or away); its sha is None if there were
    none. ``exclude``: paths never saved (what the daemon copied or linked in); files over
    ``max_file_bytes`` and force-added ignored files are not saved either (named in the
    result: :func:`left_out_note`)."""
    return commits.snapshot_worktree(
        worktree,
        released_ref(job_id),
        f"dispatcher: uncommitted changes in job {job_id}'s worktree when released",
        author_name=settings.commit_author_name,
        author_email=settings.commit_author_email,
        exclude=exclude,
        max_file_bytes=max_file_bytes,
    )


def released_ref(job_id: int) -> str:
    return f"refs/dispatcher/released/{job_id}"


def left_out_note(ref: str, done: commits.Leftovers) -> str:
    """The log line naming what a snapshot at ``ref`` left out ("" if nothing): those
    files are not in any ref and go with the worktree."""
    parts = []
    if done.too_big:
        sizes = ", ".join(f"{path} ({size / _MIB:.1f} MB)" for path, size in done.too_big)
        parts.append(f"over the size limit for automatic commits: {sizes}")
    if done.ignored:
        parts.append(f"force-added though the ignore rules match: {', '.join(done.ignored)}")
    if not parts:
        return ""
    return f"not saved in {ref}, deleted with the worktree: {'; '.join(parts)}"


_MIB = 1024 * 1024
