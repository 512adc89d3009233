"""Running one real CLI by hand, as the daemon would start it, outside a job.

For what a job cannot show (a resume argv, a system-prompt flag, a fake key): the argv
comes from :func:`dispatcher.agents.profiles.build_argv`, the cwd is a new git worktree,
HOME is empty and the environment holds no credentials (``conftest.without_credentials``)
except what the test passes in ``extra``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conformance.conftest import BIN, without_credentials
from tests.gitutil import git, init_repo


@dataclass(frozen=True)
class Workspace:
    worktree: Path
    home: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = without_credentials(dict(os.environ))
        env.update(HOME=str(self.home), PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
        env.update(extra or {})
        return env


def workspace(tmp_path: Path) -> Workspace:
    """A git worktree of a new repo (as a job's is) and an empty HOME."""
    repo = init_repo(tmp_path / "repo", files={"README.md": "hello\n"})
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "-b", "job", str(worktree))
    home = tmp_path / "home"
    home.mkdir()
    return Workspace(worktree, home)


def run(
    argv: Sequence[str],
    ws: Workspace,
    *,
    prompt: str = "Add a line to README.md.",
    extra: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``ws`` with the prompt on stdin, within ``timeout`` seconds."""
    return subprocess.run(
        list(argv),
        cwd=ws.worktree,
        env=ws.env(extra),
        input=prompt,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    argv: Sequence[str], ws: Workspace, *, extra: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``argv`` in ``ws`` in a session of its own (kill its group when done),
    the prompt on stdin, stdout piped."""
    child = subprocess.Popen(
        list(argv),
        cwd=ws.worktree,
        env=ws.env(extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert child.stdin is not None
    child.stdin.write("Add a line to README.md.\n")
    child.stdin.close()
    return child
