"""Run a built-in profile's exact argv (as the daemon builds it) straight through
subprocess, in a git repo, with an empty HOME and no credentials: for what a job does
not reach by itself (a resume, a system prompt, a run against a local stub model)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.output import AgentReport, parse_lines
from dispatcher.agents.profiles import build_argv
from tests.conformance.conftest import BIN, agent_bin, without_credentials
from tests.gitutil import init_repo


@dataclass(frozen=True)
class Direct:
    argv: list[str]
    code: int
    output: str  # stdout, then stderr

    def report(self, agent: str) -> AgentReport:
        return parse_lines(agent, self.output.split("\n"))


def place(tmp_path: Path) -> tuple[Path, Path]:
    """A repo (with conventions) and an empty HOME under ``tmp_path``."""
    files = {"README.md": "hello\n", "AGENTS.md": "# Conventions\n\nKeep changes small.\n"}
    home = tmp_path / "home"
    home.mkdir()
    return init_repo(tmp_path / "repo", files=files), home


def run_direct(
    agent: str,
    repo: Path,
    home: Path,
    *,
    prompt: str = "Add a line to README.md.",
    env: dict[str, str] | None = None,
    resume: str | None = None,
    system: str | None = None,
    timeout: float = 150,
) -> Direct:
    profile = BUILTIN_PROFILES[agent]
    agent_bin(profile.program)
    prompt_file = home.parent / f"prompt-{agent}.md"
    prompt_file.write_text(prompt)
    argv = build_argv(
        profile, prompt_file=prompt_file, workdir=repo, resume_session=resume, system_prompt=system
    )
    child = without_credentials(dict(os.environ))
    # PWD stays the test's own, as a daemon's is inherited: the agent must not follow it.
    child.update(PATH=os.pathsep.join([str(BIN), child.get("PATH", "")]), HOME=str(home))
    child.update(dict(profile.env))
    child.update(env or {})
    with open(prompt_file, "rb") as stdin:
        proc = subprocess.run(
            argv,
            cwd=repo,
            env=child,
            stdin=stdin if profile.stdin_prompt else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    return Direct(argv, proc.returncode, text)


FOLLOW_UP = "Now the tests."


def check_resume(agent: str, repo: Path, home: Path, session: str, env: dict[str, str]) -> Direct:
    """Resume ``session`` with :data:`FOLLOW_UP`: it must succeed in that same session."""
    again = run_direct(agent, repo, home, prompt=FOLLOW_UP, env=env, resume=session)
    resumed = again.report(agent)
    assert (again.code, resumed.is_error, resumed.session_id) == (0, False, session), again
    return again
