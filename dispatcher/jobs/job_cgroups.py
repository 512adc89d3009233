"""Each agent's cgroup: where they go (probed once), made per spawn, killed whole at the job's end.

Each agent runs in a cgroup (v2) of its own where the machine allows
(:mod:`dispatcher.process.cgroups`), killed whole when the job ends, so that
processes that left the agent's session (``setsid``) end with it; else only its
process group is killed, and the job log says so. A job's cgroup is named after
its spawn (``job-<id>-<nonce>``), so a crash between making one and recording
the job's end leaves a cgroup that :meth:`JobCgroups.sweep` finds at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.jobs.files import note_job
from dispatcher.lifecycle import JobState
from dispatcher.process import cgroups
from dispatcher.store.database import Store
from dispatcher.store.models import Job

log = logging.getLogger(__name__)


class JobCgroups:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parent: Path | None = None  # where job cgroups go; None: not used
        self.problem = "not probed yet"  # why not, when parent is None

    def setup(self) -> None:
        """Find and probe where job cgroups go; say once in the daemon log if they cannot."""
        digest = hashlib.sha256(str(self.settings.state_dir).encode()).hexdigest()[:12]
        try:
            if self.settings.cgroups == "off":
                raise cgroups.Unavailable("DISPATCHER_CGROUPS=off")
            parent = self.settings.cgroup_parent or cgroups.find_parent(f"dispatcher-{digest}")
            cgroups.probe(parent)
        except cgroups.Unavailable as exc:
            self.parent, self.problem = None, str(exc)
            log.log(
                logging.INFO if self.settings.cgroups == "off" else logging.WARNING,
                "cgroups are unavailable (%s): a job's end kills only its agent's process "
                "group, which processes that call setsid leave",
                exc,
            )
            return
        self.parent, self.problem = parent, ""
        log.info("agents run in cgroups under %s", parent)

    def release(self) -> None:
        """Remove the parent the daemon made for itself, when empty: agents left running,
        to be re-adopted at the next start, keep it (and theirs)."""
        if self.parent is not None and self.settings.cgroup_parent is None:
            with contextlib.suppress(OSError):
                self.parent.rmdir()

    def of(self, job: Job) -> Path | None:
        """The cgroup of the job's current spawn (None: none, or no spawn yet)."""
        if self.parent is None or job.spawn_nonce is None:
            return None
        return self.parent / f"job-{job.id}-{job.spawn_nonce}"

    def make(self, job: Job) -> Path | None:
        """The job's cgroup, made for the spawn about to start; None (noted in the job
        log) where there is none."""
        assert job.id is not None
        path = self.of(job)
        if path is not None:
            try:
                cgroups.create(path)
                return path
            except OSError as exc:
                problem = f"cannot create {path}: {exc.strerror}"
        else:
            problem = self.problem
        note_job(
            self.settings,
            job.id,
            f"warning: cgroups are unavailable ({problem}): the job's end kills only the "
            "agent's process group, which processes that call setsid leave",
        )
        return None

    def end(self, job: Job) -> None:
        """Kill whatever is left in the job's cgroup and remove it (best effort)."""
        path = self.of(job)
        if path is None:
            return
        try:
            cgroups.remove(path)
        except OSError as exc:
            log.warning("job %s: cannot remove its cgroup %s: %s", job.id, path, exc)

    def sweep(self, store: Store, node: str | None = None) -> None:
        """Kill and remove job cgroups under ours that no active job owns (left by a
        crash between making one and recording the job's end, or by a job taken over by
        another node meanwhile); ``node``: this daemon's (the active jobs of its own)."""
        if self.parent is None:
            return
        owned = {
            path
            for job in store.jobs_in([JobState.PREPARING, JobState.RUNNING], node=node)
            if (path := self.of(job)) is not None
        }
        for path in cgroups.children(self.parent):
            if path.name.startswith("job-") and path not in owned:
                try:
                    cgroups.remove(path)
                except OSError as exc:
                    log.warning("cannot remove the stale cgroup %s: %s", path, exc)
