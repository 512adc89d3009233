"""A job's worktree taken away: its ``cleanup:`` script run, then worktree and branch removed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from dispatcher import git
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.jobs import workspace
from dispatcher.jobs.files import job_files
from dispatcher.jobs.isolation import env_without_daemon_secrets, sandbox_view
from dispatcher.jobs.workspace import Workspace
from dispatcher.process import sandbox

log = logging.getLogger(__name__)


def run_cleanup(
    settings: Settings, job_id: int, ws: Workspace, worktree: Path, *, checkouts: Sequence[Path]
) -> None:
    """Run a job's ``cleanup:`` in its worktree before the worktree goes; its output goes
    to the job log. Best effort: a failure is noted there and never stops the removal.
    It runs in the job's sandbox: the worktree holds the agent's edits (``checkouts``:
    every registered repo's path, hidden from it)."""
    if not ws.cleanup or not worktree.is_dir():
        return
    files = job_files(settings, job_id)
    try:
        files.root.mkdir(parents=True, exist_ok=True)
        env = env_without_daemon_secrets()
        env.update(DISPATCHER_JOB_ID=str(job_id), DISPATCHER_WORKTREE=str(worktree))
        box = sandbox.sandbox_for(settings.sandbox, settings.sandbox_bwrap)
        view = sandbox_view(settings, checkouts, worktree, ws)
        workspace.run_script(
            "cleanup", ws.cleanup, worktree=worktree, env=env, log_path=files.log,
            exit_file=files.root / "cleanup.exit", timeout=ws.setup_timeout_s,
            grace=settings.kill_grace_seconds, wrap=lambda argv: box.wrap(argv, view, env=env),
        )  # fmt: skip
    except (DispatcherError, OSError) as exc:
        reason = exc.message if isinstance(exc, DispatcherError) else str(exc)
        log.warning("job %s: cleanup: %s", job_id, reason)
        with contextlib.suppress(OSError), open(files.log, "a", encoding="utf-8") as fh:
            fh.write(f"[dispatcher] cleanup: {reason}; the worktree is removed anyway\n")


def remove_worktree(repo_path: Path, worktree: Path, branch: str) -> None:
    """Remove a worktree and its branch (best effort: a failure goes to the daemon log)."""
    try:
        git.worktree_remove(repo_path, worktree)
        git.delete_branch(repo_path, branch)
    except DispatcherError as exc:
        log.warning("cleanup of %s failed: %s", worktree, exc.message)
