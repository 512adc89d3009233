"""Running a built-in profile's argv by hand, the way the runner would, for what a job
cannot reach through the API (a resume of a session that does not exist, a flag of its
own, a run against a local stub model, an argv with a flag taken out).

The argv comes from :func:`dispatcher.agents.profiles.build_argv`; the cwd is a new git
worktree (as a job's is) of a repo with conventions (``AGENTS.md``); HOME is empty; the
environment holds no credentials (``conftest.without_credentials``), only the profile's
``env`` and what the test passes in ``env``; PATH finds ``.conformance/bin`` first; stdin
is the prompt file when the profile reads its prompt there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.output import AgentReport, parse_lines
from dispatcher.agents.profiles import build_argv
from tests.conformance.conftest import BIN, BOUND_S, agent_bin, without_credentials
from tests.gitutil import git, init_repo

PROMPT = "Add a line to README.md."
FOLLOW_UP = "Now the tests."


@dataclass(frozen=True)
class Workspace:
    worktree: Path
    """Where the agent runs: a git worktree of a new repo."""
    home: Path
    """The agent's HOME, empty at first; sessions it keeps there last across runs."""
    prompt_file: Path


@dataclass(frozen=True)
class Ran:
    agent: str
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout, then stderr."""
        return self.stdout + self.stderr

    def report(self) -> AgentReport:
        """What the agent's parser reads in this run's output, as in a job log."""
        return parse_lines(self.agent, [*self.stdout.split("\n"), *self.stderr.split("\n")])


def workspace(tmp_path: Path) -> Workspace:
    """A git worktree of a new repo (with conventions) and an empty HOME under ``tmp_path``."""
    files = {"README.md": "hello\n", "AGENTS.md": "# Conventions\n\nKeep changes small.\n"}
    repo = init_repo(tmp_path / "repo", files=files)
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "-b", "job", str(worktree))
    home = tmp_path / "home"
    home.mkdir()
    return Workspace(worktree, home, tmp_path / "prompt.md")


def argv(
    agent: str, ws: Workspace, *, resume: str | None = None, system: str | None = None
) -> list[str]:
    """``agent``'s built-in argv as the daemon builds it for ``ws`` (its resume argv with
    ``resume``, its system-prompt flag with ``system``)."""
    return build_argv(
        BUILTIN_PROFILES[agent],
        prompt_file=ws.prompt_file,
        workdir=ws.worktree,
        resume_session=resume,
        system_prompt=system,
    )


def _env(agent: str, ws: Workspace, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = without_credentials(dict(os.environ))
    # PWD stays the test's own, as a daemon's is inherited: the agent must not follow it.
    env.update(HOME=str(ws.home), PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    env.update(BUILTIN_PROFILES[agent].env)
    env.update(extra or {})
    return env


def run(
    agent: str,
    ws: Workspace,
    *,
    prompt: str = PROMPT,
    env: Mapping[str, str] | None = None,
    resume: str | None = None,
    system: str | None = None,
    args: Sequence[str] | None = None,
) -> Ran:
    """Run ``agent``'s built-in argv (or ``args`` instead) in ``ws`` and wait for it,
    within :data:`BOUND_S`; ``env``: more of its environment."""
    profile = BUILTIN_PROFILES[agent]
    agent_bin(profile.program)
    ws.prompt_file.write_text(prompt)
    command = list(args) if args is not None else argv(agent, ws, resume=resume, system=system)
    with open(ws.prompt_file, "rb") as stdin:
        proc = subprocess.run(
            command,
            cwd=ws.worktree,
            env=_env(agent, ws, env),
            stdin=stdin if profile.stdin_prompt else subprocess.DEVNULL,
            capture_output=True,
            timeout=BOUND_S,
            check=False,
        )
    out, err = (s.decode("utf-8", errors="replace") for s in (proc.stdout, proc.stderr))
    return Ran(agent, command, proc.returncode, out, err)


def start(
    agent: str, ws: Workspace, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``agent``'s built-in argv in ``ws`` in the background, in a session of its own
    (kill its group when done), with :data:`PROMPT`; stdout piped, stderr dropped."""
    profile = BUILTIN_PROFILES[agent]
    agent_bin(profile.program)
    ws.prompt_file.write_text(PROMPT)
    with open(ws.prompt_file, "rb") as stdin:
        return subprocess.Popen(
            argv(agent, ws),
            cwd=ws.worktree,
            env=_env(agent, ws, env),
            stdin=stdin if profile.stdin_prompt else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )


def check_resume(agent: str, ws: Workspace, session: str, env: Mapping[str, str]) -> Ran:
    """Resume ``session`` with :data:`FOLLOW_UP`: it must succeed in that same session."""
    again = run(agent, ws, prompt=FOLLOW_UP, env=env, resume=session)
    resumed = again.report()
    assert (again.code, resumed.is_error, resumed.session_id) == (0, False, session), again
    return again
