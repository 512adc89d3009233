"""Running a built-in profile's argv by hand, the way the runner would, for what a job
cannot reach through the API (a resume of a session that does not exist, a flag of its
own): in a job-like git worktree, empty HOME, no credentials, the profile's ``env``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.profiles import build_argv
from tests.conformance.conftest import BIN, BOUND_S, agent_bin, without_credentials
from tests.gitutil import git, init_repo


@dataclass(frozen=True)
class Ran:
    argv: list[str]
    code: int
    output: str
    """stdout and stderr, interleaved as in a job log."""


def run_profile(
    agent: str,
    tmp_path: Path,
    *,
    resume_session: str | None = None,
    prompt: str = "Add a line to README.md.\n",
) -> Ran:
    """Run ``agent``'s built-in argv (its resume argv with ``resume_session``) in a new
    worktree of a new repo under ``tmp_path``, prompt as the profile hands it over."""
    profile = BUILTIN_PROFILES[agent]
    agent_bin(profile.program)
    repo = init_repo(tmp_path / "repo", files={"README.md": "hello\n", "AGENTS.md": "# Rules\n"})
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "-b", "job", str(worktree))
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text(prompt)
    argv = build_argv(
        profile, prompt_file=prompt_file, workdir=worktree, resume_session=resume_session
    )
    home = tmp_path / "home"
    home.mkdir()
    env = without_credentials(dict(os.environ))
    env.update(HOME=str(home), PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    env.update(profile.env)
    with open(prompt_file, "rb") as stdin:
        proc = subprocess.run(
            argv,
            cwd=worktree,
            stdin=stdin if profile.stdin_prompt else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=BOUND_S,
            check=False,
        )
    return Ran(argv, proc.returncode, proc.stdout.decode("utf-8", errors="replace"))
