"""Trigger checks: run a trigger's ``check:`` command in its own worktree at the event's commit.

"The tests went red -> an agent debugs": the agent is dispatched only when the
check exits non-zero, and its output tail is available to the prompt as
``${{ check.output_tail }}``. The check command is the repository's own (from
its committed trigger file); it runs through ``sh -c`` like a CI step, with no
event text in it (templates are not allowed in ``check:``), in a detached
worktree under ``<state dir>/checks/`` that is removed afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from dispatcher import git, proc
from dispatcher.config import Settings

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


def run_check(
    settings: Settings, repo_path: Path, rev: str, command: str, *, timeout_s: float
) -> CheckResult:
    """Run ``command`` in a fresh detached worktree at ``rev``; always removes the worktree."""
    root = settings.state_dir / "checks"
    root.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    worktree = root / run_id
    log_path = root / f"{run_id}.log"
    exit_file = root / f"{run_id}.exit"
    sha = git.worktree_add_detached(repo_path, worktree, rev)
    try:
        env = {k: v for k, v in git.clean_env().items() if not k.startswith("DISPATCHER_")}
        child = proc.spawn(
            ["/bin/sh", "-c", command],
            cwd=worktree,
            env=env,
            stdin_path=None,
            log_path=log_path,
            exit_file=exit_file,
        )
        code = proc.wait(child, timeout=timeout_s)
        proc.kill_tree(child.pid, None, grace=settings.kill_grace_seconds)
        if code is None:
            proc.wait(child, timeout=settings.kill_grace_seconds + 10)
        output = tail(log_path)
        if code is None:
            output += f"\n[dispatcher] check timed out after {timeout_s:g}s"
        return CheckResult(command=command, sha=sha, exit_code=code, output_tail=output)
    finally:
        git.worktree_remove(repo_path, worktree)
        for leftover in (log_path, exit_file):
            leftover.unlink(missing_ok=True)
        if worktree.exists():
            shutil.rmtree(worktree, ignore_errors=True)
