"""Where a job's things are on disk: its files outside the worktree, its worktree, its log notes.

``<state>/jobs/<id>/`` holds the prompt, the agent's log (with the daemon's own
``[dispatcher]`` lines), the exit status its wrapper writes, the mark of a kill at its
deadline, the spawn claim files (see :mod:`dispatcher.jobs.recovery`) and the summary
an agent may write; none of it is ever committed. The worktree is ``<worktrees>/<repo>/<id>``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.store.models import Repo

log = logging.getLogger(__name__)

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


@dataclass(frozen=True)
class JobFiles:
    """Files the daemon keeps per job, outside the worktree (never committed)."""

    root: Path

    @property
    def prompt(self) -> Path:
        return self.root / "prompt.md"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    @property
    def exit(self) -> Path:
        return self.root / "exit"

    @property
    def timed_out(self) -> Path:
        """Made when the runner kills the agent at its deadline, before the kill: an end
        recorded later from the exit file alone (after a restart, or an outage of the
        database in the end's write) is then a timeout, not a failure. Removed at the
        next spawn."""
        return self.root / "timed-out"

    def claim(self, nonce: str) -> Path:
        """The claim file of the spawn with this nonce (see :mod:`dispatcher.jobs.recovery`)."""
        return self.root / f"spawn-{nonce}"

    @property
    def summary(self) -> Path:
        """Where an agent that can (Codex's ``-o``) writes its final message."""
        return self.root / "summary.md"


def job_files(settings: Settings, job_id: int) -> JobFiles:
    return JobFiles(settings.jobs_dir / str(job_id))


def worktree_path(settings: Settings, repo: Repo, job_id: int) -> Path:
    return settings.worktrees_dir / repo.name / str(job_id)


def note_job(settings: Settings, job_id: int, text: str) -> None:
    """Append a daemon line to a job's log (best effort: a full disk loses the note,
    which then goes to the daemon log)."""
    files = job_files(settings, job_id)
    line = f"[dispatcher] {text}\n".encode()
    try:
        try:
            fd = os.open(files.log, _APPEND, 0o666)
        except FileNotFoundError:  # the job's first line: make its dir (once, not per note)
            files.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(files.log, _APPEND, 0o666)
        try:
            os.write(fd, line)  # one write of an O_APPEND file: never interleaved mid-line
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("job %s: cannot write its log (%s): %s", job_id, exc, text)
