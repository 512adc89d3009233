"""What a job's processes (setup, agent, cleanup) get: environment, sandbox view, limits, ports.

Each gets the daemon's environment without its secrets, sees what
:func:`sandbox_view` lets it see, and runs under the resource limits of the
settings. An agent also has a block of loopback ports of its own
(``DISPATCHER_PORT``), which the store allocates among those
:func:`port_is_free` finds free.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from dispatcher.config import Settings
from dispatcher.git import cmd, dotgit
from dispatcher.jobs import workspace
from dispatcher.jobs.tokens import JobTokens
from dispatcher.jobs.workspace import Workspace
from dispatcher.process import proc, sandbox
from dispatcher.store.models import Job


def env_without_daemon_secrets() -> dict[str, str]:
    """The daemon's environment for a child it starts in a worktree: cleaned of
    ``GIT_*`` redirections (:func:`dispatcher.git.cmd.clean_env`) and of every
    ``DISPATCHER_*`` variable, so the token and webhook secrets never reach it."""
    return {k: v for k, v in cmd.clean_env().items() if not k.startswith("DISPATCHER_")}


def agent_env(
    settings: Settings, job: Job, prompt_file: Path, worktree: Path, port: int | None = None
) -> dict[str, str]:
    """The environment of a job's agent (and of its setup): what it needs to know of
    its job, and its own ports, so that parallel dev servers never collide."""
    assert job.id is not None
    env = env_without_daemon_secrets()
    env.update(
        DISPATCHER_JOB_ID=str(job.id),
        DISPATCHER_API=settings.api_url,
        DISPATCHER_PROMPT_FILE=str(prompt_file),
        DISPATCHER_WORKTREE=str(worktree),
        DISPATCHER_BRANCH=job.branch,
        DISPATCHER_BASE=job.base_sha,
    )
    if port is not None:
        last = port + settings.job_ports - 1
        env.update(DISPATCHER_PORT=str(port), DISPATCHER_PORTS=f"{port}-{last}", PORT=str(port))
    return env


def mcp_env(settings: Settings, job: Job, tokens: JobTokens | None, profile: str) -> dict[str, str]:
    """What an agent needs to reach the daemon's MCP server (docs/mcp.md): its URL and
    the token of this run (minted with the job's spawn nonce, valid while it runs). These
    two names are the contract each agent's MCP configuration is built on. Given to
    the agent only (not to ``setup:``, which runs before the job does), and not at all
    when MCP is off for agents (``DISPATCHER_MCP_FOR_AGENTS=false``) or for this
    ``profile`` (``DISPATCHER_MCP_SKIP_AGENTS``): no token is minted for it then."""
    if not settings.mcp_for_agents or profile in settings.mcp_skip_agents:
        return {}
    if tokens is None or job.id is None or job.spawn_nonce is None:
        return {}
    return {
        "DISPATCHER_MCP_URL": settings.mcp_url,
        "DISPATCHER_JOB_TOKEN": tokens.mint(job.id, job.spawn_nonce),
    }


def sandbox_view(
    settings: Settings, checkouts: Sequence[Path], worktree: Path, ws: Workspace,
    read_only: Sequence[Path] = (),
) -> sandbox.View:  # fmt: skip
    """What a job's processes (setup, agent, cleanup) see in the sandbox: the state dir,
    the database and every registered checkout hidden; the worktree, its git dir and its
    ``link:`` targets given back, and ``read_only`` (see dispatcher/process/sandbox.py)."""
    dirs = dotgit.git_dirs(worktree)  # from its .git file: no process on the spawn path
    git_dir, admin = (dirs.common, dirs.gitdir) if dirs else (None, None)  # None: broken
    return sandbox.job_view(
        state_dir=settings.state_dir, checkouts=checkouts, worktree=worktree, git_dir=git_dir,
        admin_dir=admin if admin != git_dir else None, read_only=read_only,
        links=workspace.link_targets(ws, worktree, checkouts), database=settings.sqlite_file,
    )  # fmt: skip


def limits(settings: Settings) -> proc.Limits | None:
    """The agent's resource limits (memory, CPU time); None when there are none."""
    memory = settings.agent_memory_mb
    cpu = settings.agent_cpu_seconds
    if memory is None and cpu is None:
        return None
    return proc.Limits(memory_bytes=memory * 2**20 if memory else None, cpu_seconds=cpu)


def port_is_free(port: int) -> bool:
    """True if nothing listens on ``port`` (loopback) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
