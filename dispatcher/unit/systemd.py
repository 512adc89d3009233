"""The systemd user unit (``dispatcher.service``) and the ``systemctl --user`` commands.

:func:`render` is pure: a target in, the unit's text out. docs/service.md explains each
directive; the test module runs ``systemd-analyze verify`` on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dispatcher.errors import InvalidInput
from dispatcher.unit.command import run
from dispatcher.unit.target import Target

UNIT = "dispatcher.service"


def _specifiers(value: str) -> str:
    """``value`` with systemd's ``%`` specifiers escaped; a newline cannot be written."""
    if "\n" in value:
        raise InvalidInput(f"a path or setting for the unit holds a newline: {value!r}")
    return value.replace("%", "%%")


def _quoted(value: str) -> str:
    """One word of a unit's command or assignment, double-quoted where needed."""
    value = _specifiers(value)
    if value and not any(ch in value for ch in " \t\"'\\;"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(target: Target) -> str:
    """The unit file for ``target``."""
    # ExecStart expands $VAR (Environment= does not): a literal $ is written $$.
    exec_start = " ".join(_quoted(arg).replace("$", "$$") for arg in target.argv)
    return f"""\
# The worktree-dispatcher daemon as a systemd user service ({target.unit_file}).
# Written by `dispatcher service install`; docs/service.md explains each line.
# Settings (DISPATCHER_*): {target.env_file}, read at each start.

[Unit]
Description=worktree-dispatcher: coding agents in their own git worktrees
# A daemon that fails 5 starts in 5 minutes has a setting to fix, not a crash: stay failed.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=exec
ExecStart={exec_start}
Environment={_quoted("DISPATCHER_STATE_DIR=" + str(target.state_dir))}
EnvironmentFile=-{_specifiers(str(target.env_file))}
Restart=on-failure
RestartSec=5
# A stop is the daemon's own clean SIGTERM stop: it exits 0 and leaves running agents
# running (each in its own session and cgroup) for the next start to re-adopt. Only the
# daemon is signalled: the default KillMode would SIGTERM every agent with it, and
# mixed would SIGKILL them once it exited, crashes and restarts included.
KillSignal=SIGTERM
KillMode=process
TimeoutStopSec={target.stop_timeout}
# The daemon makes a cgroup for each agent under its own (dispatcher/process/cgroups.py):
# that part of the tree is the daemon's, not systemd's.
Delegate=yes

[Install]
WantedBy=default.target
"""


def _systemctl(*args: str) -> list[str]:
    return ["systemctl", "--user", *args]


class Systemd:
    """The systemd user manager: where its unit goes and its commands."""

    name = "systemd"
    stops_to_reload = False  # `systemctl start` of a running unit does nothing

    def unit_file(self, home: Path, config_home: Path) -> Path:
        """Where a user unit goes: ``$XDG_CONFIG_HOME/systemd/user/``."""
        return config_home / "systemd" / "user" / UNIT

    def log_file(self, home: Path) -> Path | None:
        return None  # the journal

    def render(self, target: Target) -> str:
        return render(target)

    def links(self, target: Target) -> list[Path]:
        """The link ``systemctl --user enable`` makes for ``WantedBy=default.target``."""
        return [target.unit_file.parent / "default.target.wants" / UNIT]

    def unavailable(self) -> str | None:
        """Why ``systemctl --user`` cannot act here (None: a user manager answers)."""
        if shutil.which("systemctl") is None:
            return "systemctl is not installed"
        # Its version, asked of the manager itself (`is-system-running` says "offline"
        # wherever PID 1 is not systemd, even with a user manager that answers).
        answer = run(_systemctl("show", "--property=Version", "--value"))
        if answer.code == 0 and answer.output:
            return None
        said = answer.output.splitlines()[-1] if answer.output else f"exit {answer.code}"
        return f"no systemd user manager answers (systemctl --user: {said})"

    def start_commands(self, target: Target) -> list[list[str]]:
        """Load the unit, start it at login, and start it now."""
        return [_systemctl("daemon-reload"), _systemctl("enable", UNIT), _systemctl("start", UNIT)]

    def stop_commands(self, target: Target) -> list[list[str]]:
        """Stop the daemon and no longer start it at login."""
        return [_systemctl("disable", "--now", UNIT)]

    def forget_commands(self, target: Target) -> list[list[str]]:
        """After the unit file is gone."""
        return [_systemctl("daemon-reload")]

    def status_command(self, target: Target) -> list[str]:
        return _systemctl("status", "--no-pager", UNIT)

    def logs_command(self, target: Target, lines: int, follow: bool) -> list[str]:
        follow_flag = ["-f"] if follow else []
        return ["journalctl", "--user", "-u", UNIT, "-n", str(lines), "--no-pager", *follow_flag]
