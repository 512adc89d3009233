"""What is said about a job: the :class:`JobNotice`, and the ``needs-review`` alias."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.lifecycle import JobState

NEEDS_REVIEW = "needs-review"
"""Alias usable in ``on``: a *succeeded* job with changed files (waiting for review)."""

TEAM_BLOCKED = "blocked"
"""Usable in ``on``: a team member signaled it is blocked (docs/teams.md); sent about its job."""

FIX_GAVE_UP = "gave-up"
"""Usable in ``on``: a fix loop reached its bound (docs/forge.md, "Fix loops"); sent about
the chain's newest job, to the targets listening to ``gave-up`` or ``failed``."""


@dataclass(frozen=True)
class JobNotice:
    """What is sent about a job; built by the caller from a job row."""

    job_id: int
    repo: str
    state: str
    branch: str | None
    prompt: str  # the first non-blank line is the title
    summary: str | None
    error: str | None
    url: str | None  # link to the job in the API, e.g. http://127.0.0.1:8765/jobs/12
    cost_usd: float | None = None
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None


def needs_review(notice: JobNotice) -> bool:
    """The ``needs-review`` alias: a succeeded job that changed files.

    A succeeded job is by definition neither merged nor discarded yet (those are
    later states). ``files_changed`` of ``None`` (unknown) or 0 does not count.
    """
    return notice.state == JobState.SUCCEEDED.value and (notice.files_changed or 0) > 0
