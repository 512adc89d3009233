"""A job's worktree made ready to work in: copied and linked files, setup, cleanup.

What applies to a job is resolved when it is submitted, from the repo's active
trigger file (and the trigger that fired), and stored on the job
(:class:`Workspace`), so a retry or a restart prepares exactly the same:

* ``copy`` / ``link``: untracked files from the user's checkout (``.env``,
  ``node_modules``) are copied or symlinked into the new worktree. A path must
  stay inside the repo, also after symlinks are resolved; a missing source or a
  destination that already exists is skipped with a note in the job log. These
  paths are never committed by the daemon (see :func:`dispatcher.git.commits.commit_leftovers`).
* ``setup``: a command (``sh -c``), or a script path in the repo, run in the
  worktree before the agent with the agent's environment, its own timeout, and
  its output at the head of the job log. Failure fails the job at ``preparing``.
* ``cleanup``: run in the worktree before it is removed (merge, discard,
  retention); its failure is noted in the log and never blocks the removal.

Scripts run in their own session like agents do (:func:`dispatcher.process.proc.spawn`),
so a timeout kills the whole process tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.paths import repo_subpath
from dispatcher.process import proc
from triggers.config import Trigger, TriggerFile


class Workspace(BaseModel):
    """What prepares a job's worktree; stored on the job as JSON."""

    model_config = ConfigDict(extra="ignore")

    setup: str | None = None
    setup_timeout_s: float = 600.0
    cleanup: str | None = None
    copy_paths: list[str] = Field(default_factory=list)
    link_paths: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    max_leftover_file_mb: float | None = None  # the repo's own limit; None: the daemon's

    def is_empty(self) -> bool:
        return self == Workspace(setup_timeout_s=self.setup_timeout_s)

    def max_leftover_bytes(self, default_mb: float) -> int | None:
        """The size over which a file is left out of the daemon's commits and snapshots:
        the repo's own ``max-leftover-file-mb``, else ``default_mb``; None when it is 0."""
        mb = self.max_leftover_file_mb if self.max_leftover_file_mb is not None else default_mb
        return int(mb * 1024 * 1024) if mb else None

    def never_commit(self) -> list[str]:
        """Paths the daemon must not commit: what it brought in itself."""
        return [*self.copy_paths, *self.link_paths]


class SetupFailed(DispatcherError):
    code = "setup_failed"


def resolve(
    file: TriggerFile | None, trigger: Trigger | None, *, skills: list[str] | None = None
) -> Workspace:
    """The workspace of a job: the repo file's settings, the trigger's overrides."""
    ws = Workspace()
    if file is not None:
        ws = Workspace(
            setup=file.setup_for(trigger) if trigger is not None else file.setup,
            setup_timeout_s=file.setup_timeout_minutes * 60,
            cleanup=file.cleanup,
            copy_paths=list(file.copy_paths),
            link_paths=list(file.link_paths),
            max_leftover_file_mb=file.max_leftover_file_mb,
        )
    chosen = skills if skills is not None else (list(trigger.skills) if trigger else [])
    return ws.model_copy(update={"skills": chosen})


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing a path that leaves ``root`` (also through symlinks)."""
    try:
        rel = repo_subpath(rel)  # the check the trigger file had (stored rows may be older)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    real_root = os.path.realpath(root)
    target = os.path.realpath(root / rel)
    if target != real_root and not target.startswith(real_root + os.sep):
        raise InvalidInput(f"{rel!r} leads outside the repository (to {target})")
    return root / rel


def bring_files(ws: Workspace, repo: Path, worktree: Path) -> list[str]:
    """Copy and link the workspace's paths from ``repo`` into ``worktree``.

    Returns notes for the job log. Raises InvalidInput when a path leaves the
    repo (in the checkout, or in the worktree through a symlink in it).
    """
    notes: list[str] = []
    for rel, how in [(p, "copy") for p in ws.copy_paths] + [(p, "link") for p in ws.link_paths]:
        source = _inside(repo, rel)
        dest = _inside(worktree, rel)
        if not os.path.lexists(source):
            notes.append(f"{how} {rel}: not in your checkout, skipped")
            continue
        if os.path.lexists(dest):
            notes.append(f"{how} {rel}: already in the worktree (tracked?), left as it is")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if how == "link":
            dest.symlink_to(os.path.realpath(source), target_is_directory=source.is_dir())
        elif source.is_dir() and not source.is_symlink():
            shutil.copytree(source, dest, symlinks=True)
        else:
            shutil.copy2(source, dest, follow_symlinks=False)
        notes.append(f"{how} {rel}: done")
    return notes


def link_targets(ws: Workspace, worktree: Path, checkouts: Iterable[Path]) -> list[Path]:
    """Where the worktree's ``link:`` symlinks lead, for those that still lead where
    :func:`bring_files` pointed them: the same path in one of ``checkouts`` (a link
    the agent re-pointed elsewhere is not followed)."""
    targets = []
    for rel in ws.link_paths:
        if not (worktree / rel).is_symlink():
            continue
        target = os.path.realpath(worktree / rel)
        if any(os.path.realpath(Path(c) / rel) == target for c in checkouts):
            targets.append(Path(target))
    return targets


def script_argv(command: str, worktree: Path) -> list[str]:
    """``sh -c COMMAND``, or ``sh PATH`` when the command names a script in the repo
    that is not executable (a checked-in ``setup.sh`` without its x bit)."""
    candidate = worktree / command
    if (
        not os.path.isabs(command)
        and ".." not in Path(command).parts
        and candidate.is_file()
        and not os.access(candidate, os.X_OK)
    ):
        return ["sh", "--", command]
    return ["sh", "-c", command]


def run_script(
    what: str,
    command: str,
    *,
    worktree: Path,
    env: Mapping[str, str],
    log_path: Path,
    exit_file: Path,
    timeout: float,
    grace: float = 3.0,
    wrap: Callable[[list[str]], list[str]] = list,
) -> None:
    """Run a setup or cleanup command in ``worktree``, output appended to ``log_path``.
    ``wrap`` turns its argv into the one to run (the sandbox's, see dispatcher/process/sandbox.py).

    Raises :class:`SetupFailed` with a one-line reason when it cannot start,
    exits non-zero or runs past ``timeout`` (its process tree is killed).
    """
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"[dispatcher] {what}: {command}\n")
    argv = wrap(script_argv(command, worktree))
    try:
        child = proc.spawn(
            argv,
            cwd=worktree,
            env=env,
            stdin_path=None,
            log_path=log_path,
            exit_file=exit_file,
        )
    except DispatcherError as exc:
        raise SetupFailed(f"{what} could not start: {exc.message}") from exc
    code = proc.wait(child, timeout=timeout)
    if code is None:
        proc.kill_tree(child.pid, child.start_time, grace=grace)
        proc.wait(child, timeout=grace + 10)
        raise SetupFailed(f"{what} timed out after {timeout:g}s (see the job log)")
    proc.kill_tree(child.pid, None, grace=grace)  # nothing it started lingers
    if code != 0:
        raise SetupFailed(f"{what} failed with {proc.describe_status(code)} (see the job log)")
