"""Waiting on a job's agent like rq's supervisor: until it ends or its deadline, then kill its tree.

The job's log is capped as the agent writes it, by its log writer
(dispatcher/process/logpipe.py), so waiting is all the supervisor does while
the agent runs.
"""

from __future__ import annotations

from dispatcher.config import Settings
from dispatcher.jobs.files import note_job
from dispatcher.process import proc
from dispatcher.store.models import Job, utcnow


def wait_out(settings: Settings, job: Job, child: proc.Spawned) -> tuple[int | None, bool]:
    """Wait for the agent until the job's deadline (counted from ``started_at``), killing
    its process tree then; and once it has ended, kill what it left in its session.
    Returns its exit status (see :func:`dispatcher.process.proc.wait`) and whether it
    timed out."""
    assert job.id is not None
    started = job.started_at or utcnow()
    deadline = job.timeout_s - (utcnow() - started).total_seconds()
    code = proc.wait(child, timeout=max(0.0, deadline))
    timed_out = code is None
    if timed_out:
        note_job(settings, job.id, f"timed out after {job.timeout_s:g}s: killing the process tree")
        proc.kill_tree(
            child.pid, child.start_time, grace=settings.kill_grace_seconds, cgroup=child.cgroup
        )
        code = proc.wait(child, timeout=settings.kill_grace_seconds + 10)
    else:
        # The agent is gone; make sure nothing it started in its session lingers.
        proc.kill_tree(child.pid, None, grace=settings.kill_grace_seconds, cgroup=child.cgroup)
    return code, timed_out
