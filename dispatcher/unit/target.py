"""What a service install puts where: the daemon's command, the state dir, the environment
file, the unit file and its log, and how long a stop may take. Pure but for
:func:`write_env_file`."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config import Settings

# After SIGTERM the daemon stops within seconds: 3 s of graceful HTTP shutdown, up to 5 s
# for the runner's loop and 2 s for the notifier, and a trigger check under way is killed
# with the agents' kill grace. The manager waits this much (plus that grace) before SIGKILL.
STOP_SECONDS = 30


@dataclass(frozen=True)
class Target:
    argv: tuple[str, ...]  # the daemon: this install's `dispatcher serve`, by absolute path
    state_dir: Path  # pinned in the unit, so the daemon finds the state dir the CLI uses
    env_file: Path  # DISPATCHER_* settings (and PATH), read at each start
    unit_file: Path  # the systemd unit or the launchd plist
    log_file: Path | None  # launchd: the daemon's output (None: systemd's journal)
    stop_timeout: int  # seconds from SIGTERM to SIGKILL
    uid: int


def daemon_argv() -> tuple[str, ...]:
    """This install's ``dispatcher serve``: the script beside this Python (its venv's bin
    dir, not resolved through the venv's symlink), else the one on PATH, else ``python -m``."""
    script = Path(sys.executable).absolute().parent / "dispatcher"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script), "serve")
    found = shutil.which("dispatcher")
    if found:
        return (str(Path(found).absolute()), "serve")
    return (str(Path(sys.executable).absolute()), "-m", "dispatcher.cli", "serve")


def config_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME``, falling back to ``~/.config``."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"


def target_for(
    settings: Settings, unit_file: Path, log_file: Path | None, environ: Mapping[str, str]
) -> Target:
    return Target(
        argv=daemon_argv(),
        state_dir=settings.state_dir,
        env_file=config_home(environ) / "dispatcher" / "env",
        unit_file=unit_file,
        log_file=log_file,
        stop_timeout=STOP_SECONDS + math.ceil(settings.kill_grace_seconds),
        uid=os.getuid(),
    )


def env_file_text(environ: Mapping[str, str]) -> str:
    """The first environment file: the installing shell's PATH (where agents are found) and
    its DISPATCHER_* settings, quoted for both systemd and ``sh`` (the launchd wrapper)."""
    kept = {
        key: value
        for key, value in sorted(environ.items())
        if key == "PATH" or (key.startswith("DISPATCHER_") and key != "DISPATCHER_STATE_DIR")
    }
    lines = [
        "# The daemon's settings (docs/configuration.md), read at each start of the service:",
        "# one NAME=value a line, quoted as in sh. Written once by `dispatcher service",
        "# install` from the shell it ran in, never overwritten: edit it, then restart.",
        "# DISPATCHER_STATE_DIR is set by the unit itself.",
        *(f"{key}={shlex.quote(value)}" for key, value in kept.items()),
    ]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> bool:
    """Create ``path`` (0600; its dir made 0700 if missing) holding ``text``; False if it
    exists (kept)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True
