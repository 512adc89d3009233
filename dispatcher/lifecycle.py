"""The job state machine: states and the one transition table. Pure, no I/O.

::

    queued -> preparing -> running -> succeeded | failed | timed_out | canceled
                                      \\-> merged | discarded (after review)

Every state change in the daemon goes through :func:`transition`, and the
store applies it with a compare-and-set on the current state, so two actors
can never both move the same job: ``Store.move`` for one job, ``Store.claim``
for the jobs it takes (``queued -> preparing``, one ``UPDATE ... WHERE state =
'queued'``). A job is created ``queued``; that is its first state, not a change.
"""

from __future__ import annotations

from enum import StrEnum

from dispatcher.errors import InvalidState


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for a free slot (global and per-repo limits)
    PREPARING = "preparing"  # claimed: worktree being created, prompt written
    RUNNING = "running"  # agent process alive in its worktree
    SUCCEEDED = "succeeded"  # agent exited 0; with commits ahead, it waits for review
    FAILED = "failed"  # agent exited non-zero, could not start, or was lost
    TIMED_OUT = "timed_out"  # killed (whole process tree) after its timeout
    CANCELED = "canceled"  # stopped on request; worktree and branch kept
    MERGED = "merged"  # landed on its target branch; worktree removed
    DISCARDED = "discarded"  # worktree and branch removed without landing


class MergeStrategy(StrEnum):
    """How `merge` lands a finished job's branch on its target branch."""

    MERGE = "merge"  # always a merge commit
    SQUASH = "squash"  # the job's changes as one commit on top of the target
    REBASE = "rebase"  # the job's commits replayed onto the target
    FF = "ff"  # fast-forward only; refused if the target has moved


ACTIVE = frozenset({JobState.QUEUED, JobState.PREPARING, JobState.RUNNING})
"""States in which the daemon still owes the job work."""

FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED})
"""The agent is done; the result can be reviewed, merged, discarded or retried."""

IN_INBOX = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT})
"""Finished states whose jobs, with commits ahead, await review (``inbox``): a failed or
timed-out agent's commits may be worth keeping. A canceled job was stopped on purpose."""

CLOSED = frozenset({JobState.MERGED, JobState.DISCARDED})
"""Nothing more will happen to the job."""

TERMINAL = FINISHED | CLOSED
"""States ``run --wait`` and ``logs -f`` stop at."""

_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.PREPARING, _S.CANCELED, _S.DISCARDED}),
    # -> queued: the daemon died while preparing; the job is re-queued.
    _S.PREPARING: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELED, _S.QUEUED}),
    # -> queued: the agent was lost in a crash and attempts remain.
    _S.RUNNING: frozenset(
        {_S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.CANCELED, _S.QUEUED},
    ),
    _S.SUCCEEDED: frozenset({_S.MERGED, _S.DISCARDED}),
    _S.FAILED: frozenset({_S.MERGED, _S.DISCARDED}),
    _S.TIMED_OUT: frozenset({_S.MERGED, _S.DISCARDED}),
    _S.CANCELED: frozenset({_S.MERGED, _S.DISCARDED}),
    _S.MERGED: frozenset(),
    _S.DISCARDED: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def transition(current: JobState, target: JobState) -> JobState:
    """Return ``target`` if the move is allowed, else raise :class:`InvalidState`."""
    if not can_transition(current, target):
        raise InvalidState(
            f"a {current.value} job cannot become {target.value}",
            details={"state": current.value, "target": target.value},
        )
    return target
