"""The launchd agent (``~/Library/LaunchAgents/<label>.plist``) and the ``launchctl`` commands.

:func:`render` is pure: a target in, the plist's XML out (written by :mod:`plistlib`).
launchd reads no environment file, so the agent runs a two-line ``sh`` wrapper that
loads it (as systemd's ``EnvironmentFile=`` does) and ``exec``\\ s the daemon, which so
gets launchd's SIGTERM itself.
"""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

from dispatcher.unit.target import Target

LABEL = "dev.worktree-dispatcher"
# $1: the environment file (its variables exported), the rest: the daemon's argv.
WRAPPER = 'if [ -f "$1" ]; then set -a; . "$1"; set +a; fi; shift; exec "$@"'


def agent(target: Target) -> dict[str, object]:
    """The agent's definition (``man launchd.plist``)."""
    assert target.log_file is not None
    return {
        "Label": LABEL,
        "ProgramArguments": [
            "/bin/sh",
            "-c",
            WRAPPER,
            "dispatcher-env",
            str(target.env_file),
            *target.argv,
        ],
        "EnvironmentVariables": {"DISPATCHER_STATE_DIR": str(target.state_dir)},
        "RunAtLoad": True,  # started at login (when the agent is loaded)
        "KeepAlive": {"SuccessfulExit": False},  # restarted when it exits non-zero or is killed
        # launchd's SIGTERM reaches the daemon alone; it leaves running agents (each in
        # its own session) for the next start: launchd must not kill them after it.
        "AbandonProcessGroup": True,
        "ExitTimeOut": target.stop_timeout,  # SIGTERM to SIGKILL
        "StandardOutPath": str(target.log_file),
        "StandardErrorPath": str(target.log_file),
    }


def render(target: Target) -> str:
    return plistlib.dumps(agent(target), sort_keys=False).decode()


class Launchd:
    """The launchd of the logged-in user (the ``gui/<uid>`` domain)."""

    name = "launchd"
    stops_to_reload = True  # `launchctl bootstrap` refuses a loaded agent

    def unit_file(self, home: Path, config_home: Path) -> Path:
        return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def log_file(self, home: Path) -> Path | None:
        return home / "Library" / "Logs" / "dispatcher.log"

    def render(self, target: Target) -> str:
        return render(target)

    def links(self, target: Target) -> list[Path]:
        return []

    def unavailable(self) -> str | None:
        return None if shutil.which("launchctl") else "launchctl is not installed (not macOS)"

    def start_commands(self, target: Target) -> list[list[str]]:
        """Clear a disabled mark, then load the agent (RunAtLoad starts it)."""
        domain = f"gui/{target.uid}"
        return [
            ["launchctl", "enable", f"{domain}/{LABEL}"],
            ["launchctl", "bootstrap", domain, str(target.unit_file)],
        ]

    def stop_commands(self, target: Target) -> list[list[str]]:
        """Unload the agent: SIGTERM, and no restart until it is loaded again."""
        return [["launchctl", "bootout", f"gui/{target.uid}/{LABEL}"]]

    def forget_commands(self, target: Target) -> list[list[str]]:
        return []

    def status_command(self, target: Target) -> list[str]:
        return ["launchctl", "print", f"gui/{target.uid}/{LABEL}"]

    def logs_command(self, target: Target, lines: int, follow: bool) -> list[str]:
        assert target.log_file is not None
        return ["tail", "-n", str(lines), *(["-F"] if follow else []), str(target.log_file)]
