"""How a test or a benchmark runs the ``dispatcher`` command: its argv, a free loopback port,
a clean environment, and the job states that end a wait.

Standard library only: ``bench/`` imports it too, and must not need pytest.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

TERMINAL = {"succeeded", "failed", "timed_out", "canceled", "merged", "discarded"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dispatcher_argv() -> list[str]:
    script = Path(sys.executable).parent / "dispatcher"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dispatcher.cli"]


def clean_env(home: Path, identity: Mapping[str, str]) -> dict[str, str]:
    """The environment without inherited ``GIT_*``/``DISPATCHER_*`` variables, with a private
    home (and git config in it) and ``identity`` (``GIT_AUTHOR_*``, ``GIT_COMMITTER_*``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCHER_", "GIT_"))}
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        **identity,
    )
    return env
