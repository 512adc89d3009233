"""Trigger checks: run a trigger's ``check:`` command in its own worktree at the event's commit.

"The tests went red -> an agent debugs": the agent is dispatched only when the
check exits non-zero, and its output tail is available to the prompt as
``${{ check.output_tail }}``. The check command is the repository's own (from
its committed trigger file); it runs through ``sh -c`` like a CI step, with no
event text in it (templates are not allowed in ``check:``), in a detached
worktree under ``<state dir>/checks/`` that is removed afterwards. It runs in
the same sandbox as a job's processes (:mod:`dispatcher.process.sandbox`; it runs the
event commit's code, a pushed branch's ``conftest.py`` say): the state dir and
every registered checkout hidden, its worktree and the repo's git dir given back.

A check is never lost to a daemon stop: when the daemon stops (``stop`` is set)
the check's process tree is killed and :class:`CheckInterrupted` is raised, so
the event keeps the check as pending and the next daemon runs it again. A
crashed daemon leaves ``<run id>.pid``; :func:`clear_leftovers` kills that
process tree and removes the worktree at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.git import dotgit, worktrees
from dispatcher.jobs.isolation import env_without_daemon_secrets
from dispatcher.process import proc, sandbox

log = logging.getLogger(__name__)

TAIL_LINES = 200
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class CheckResult:
    command: str
    sha: str
    exit_code: int | None  # None: timed out (the process tree was killed)
    output_tail: str

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def context(self) -> dict[str, object]:
        """What templates see as ``check.*``."""
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "output_tail": self.output_tail,
        }


def tail(path: Path, *, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``lines`` lines (at most ``max_bytes``) of a file, decoded leniently."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class CheckInterrupted(Exception):
    """The daemon is stopping: the check was killed and did not decide anything."""


# How often a running check looks at the stop flag.
_STOP_POLL_S = 0.1


def check_view(settings: Settings, worktree: Path, checkouts: Sequence[Path]) -> sandbox.View:
    """What a check sees: a job's view (see :func:`dispatcher.process.sandbox.job_view`) of its
    own worktree, with no prompt, summary or ``link:`` targets."""
    dirs = dotgit.git_dirs(worktree)
    git_dir, admin = (dirs.common, dirs.gitdir) if dirs else (None, None)
    return sandbox.job_view(
        state_dir=settings.state_dir, checkouts=checkouts, worktree=worktree, git_dir=git_dir,
        admin_dir=admin if admin != git_dir else None, database=settings.sqlite_file,
    )  # fmt: skip


def run_check(
    settings: Settings,
    repo_path: Path,
    rev: str,
    command: str,
    *,
    timeout_s: float,
    stop: threading.Event | None = None,
    checkouts: Sequence[Path] = (),
) -> CheckResult:
    """Run ``command`` in a fresh detached worktree at ``rev``, sandboxed like a job
    (``checkouts``: every registered repo's path, hidden); always removes the worktree.

    Raises :class:`CheckInterrupted` when ``stop`` is set before the check ends.
    """
    stop = stop or threading.Event()
    root = settings.state_dir / "checks"
    root.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    worktree = root / run_id
    log_path = root / f"{run_id}.log"
    exit_file = root / f"{run_id}.exit"
    pid_file = root / f"{run_id}.pid"
    if stop.is_set():
        raise CheckInterrupted
    sha = worktrees.add_detached(repo_path, worktree, rev)
    try:
        env = env_without_daemon_secrets()  # the same as an agent's: no token, no secrets
        box = sandbox.sandbox_for(settings.sandbox, settings.sandbox_bwrap)
        child = proc.spawn(
            box.wrap(
                ["/bin/sh", "-c", command], check_view(settings, worktree, checkouts), env=env
            ),
            cwd=worktree,
            env=env,
            stdin_path=None,
            log_path=log_path,
            exit_file=exit_file,
        )
        try:
            pid_file.write_text(f"{child.pid} {child.start_time}\n")
            deadline = time.monotonic() + timeout_s
            code = None
            while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
                code = proc.wait(child, timeout=min(left, _STOP_POLL_S))
                if code is not None:
                    break
        finally:  # what it left running (or all of it, on a timeout, a stop or an error)
            proc.kill_tree(child.pid, None, grace=settings.kill_grace_seconds)
        if code is None:
            proc.wait(child, timeout=settings.kill_grace_seconds + 10)
            if stop.is_set():
                raise CheckInterrupted
        output = tail(log_path)
        if code is None:
            output += f"\n[dispatcher] check timed out after {timeout_s:g}s"
        return CheckResult(command=command, sha=sha, exit_code=code, output_tail=output)
    finally:
        worktrees.remove(repo_path, worktree)
        for leftover in (log_path, exit_file, pid_file):
            leftover.unlink(missing_ok=True)
        if worktree.exists():
            shutil.rmtree(worktree, ignore_errors=True)


def clear_leftovers(settings: Settings) -> None:
    """What checks interrupted by a crash left in ``checks/``: their process trees
    (named by ``<run id>.pid``) are killed, their detached worktrees removed.
    Nothing in them is worth keeping: a check never changes files that matter, and
    its event still lists it as pending, so it runs again."""
    root = settings.state_dir / "checks"
    if not root.is_dir():
        return
    for pid_file in root.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid, start = (int(x) for x in pid_file.read_text().split())
            proc.kill_tree(pid, start, grace=settings.kill_grace_seconds)
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    # Their records in each repo are pruned by the sweeper's `git worktree prune`.
