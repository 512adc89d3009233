"""`dispatcher service`: the systemd unit and launchd plist it writes, install and uninstall
with no service manager, and (where one can run here) the daemon started and stopped by a
real systemd user manager.

Every test points HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR into its tmp dir (and drops
DBUS_SESSION_BUS_ADDRESS), so no test reaches the user manager of whoever runs the suite.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.daemon_fixture import IDENTITY
from tests.daemonproc import clean_env, dispatcher_argv

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (.ci/run installs Debian's systemd)"
)


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A private home, config home and runtime dir (empty: no user manager answers there)."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    for path in (home, runtime):
        path.mkdir(exist_ok=True, mode=0o700)
    env = clean_env(home, IDENTITY)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.update(XDG_CONFIG_HOME=str(home / ".config"), XDG_RUNTIME_DIR=str(runtime), **extra)
    return env


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dispatcher_argv(), "service", *args],
        env=dict(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


# ------------------------------------------------------------------ the systemd unit


def verify(unit: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@needs_analyze
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # A state dir with a space, a % (a systemd specifier) and a quote must come out quoted.
    state = tmp_path / "my state %i 'x'"
    env = service_env(tmp_path, DISPATCHER_STATE_DIR=str(state))
    printed = cli(env, "install", "--print")
    assert printed.returncode == 0, printed.stderr
    unit = printed.stdout
    for line in (
        f"ExecStart={dispatcher_argv()[0]} serve",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "KillMode=process",
        "TimeoutStopSec=35",  # 30 s plus the default kill grace, 5 s
        "Delegate=yes",
        f"EnvironmentFile=-{tmp_path}/home/.config/dispatcher/env",
        'Environment="DISPATCHER_STATE_DIR=' + str(state).replace("%", "%%") + '"',
        "WantedBy=default.target",
    ):
        assert line + "\n" in unit, f"{line!r} not in:\n{unit}"
    path = tmp_path / "check" / "dispatcher.service"
    path.parent.mkdir()
    path.write_text(unit)
    result = verify(path, tmp_path / "run")
    # verify exits 0 on unknown keys and bad values too, only warning: nothing may be said.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    # And it does catch what is wrong (so the check above can fail): a missing program.
    path.write_text(unit.replace(f"ExecStart={dispatcher_argv()[0]}", "ExecStart=/nonexistent/x"))
    bad = verify(path, tmp_path / "run")
    assert bad.returncode != 0 and "/nonexistent/x" in bad.stderr


def test_the_unit_follows_the_settings(tmp_path: Path) -> None:
    env = service_env(tmp_path, DISPATCHER_KILL_GRACE_SECONDS="12.5")
    unit = cli(env, "install", "--print").stdout
    assert "TimeoutStopSec=43\n" in unit  # 30 + 12.5 rounded up
    assert f"Environment=DISPATCHER_STATE_DIR={tmp_path}/home/.local/state/dispatcher\n" in unit


# ------------------------------------------------------------------ the launchd plist


def test_the_launchd_plist_parses_and_loads_the_env_file(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    printed = cli(env, "install", "--print", "--manager", "launchd")
    assert printed.returncode == 0, printed.stderr
    agent = plistlib.loads(printed.stdout.encode())
    home = tmp_path / "home"
    env_file = home / ".config" / "dispatcher" / "env"
    assert agent["Label"] == "dev.worktree-dispatcher"
    assert agent["ProgramArguments"][-2:] == [dispatcher_argv()[0], "serve"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a crash only
    assert agent["AbandonProcessGroup"] is True  # running agents outlive a stop
    assert agent["ExitTimeOut"] == 35
    assert (
        agent["StandardOutPath"]
        == agent["StandardErrorPath"]
        == str(home / "Library" / "Logs" / "dispatcher.log")
    )
    assert agent["EnvironmentVariables"] == {
        "DISPATCHER_STATE_DIR": str(home / ".local" / "state" / "dispatcher")
    }
    # The wrapper loads the env file (as install writes it: sh quoting) and execs the rest.
    tricky = '{"claude": ["claude", "-p", "it\'s $HOME"]}'
    env_file.parent.mkdir(parents=True)
    env_file.write_text(f"# comment\nDISPATCHER_AGENTS={shlex.quote(tricky)}\n")
    wrapper = agent["ProgramArguments"][:5]
    assert wrapper[3:] == ["dispatcher-env", str(env_file)]
    shown = subprocess.run(
        [*wrapper, "/usr/bin/env"], env={"PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert f"DISPATCHER_AGENTS={tricky}\n" in shown
    env_file.unlink()  # a missing env file is no error
    subprocess.run([*wrapper, "/bin/true"], env={}, timeout=30, check=True)


# ------------------------------------------------------------------ install, uninstall


def test_print_writes_nothing(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    before = files_under(tmp_path)
    for manager in ("systemd", "launchd"):
        assert cli(env, "install", "--print", "--manager", manager).returncode == 0
    assert files_under(tmp_path) == before


def test_install_and_uninstall_without_a_user_manager(tmp_path: Path) -> None:
    env = service_env(tmp_path, DISPATCHER_PORT="9999", DISPATCHER_AGENTS='{"x": ["y z"]}')
    home = tmp_path / "home"
    unit = home / ".config" / "systemd" / "user" / "dispatcher.service"
    env_file = home / ".config" / "dispatcher" / "env"
    done = cli(env, "install")
    # Exit 0: the unit is written; what would start it is printed, for the user to run.
    assert done.returncode == 0, done.stderr
    assert unit.read_text() == cli(env, "install", "--print").stdout
    assert "not started: no systemd user manager answers" in done.stdout
    for command in (
        "systemctl --user daemon-reload",
        "systemctl --user enable dispatcher.service",
        "systemctl --user start dispatcher.service",
    ):
        assert f"\n  {command}\n" in done.stdout + "\n", done.stdout
    # The env file: 0600, this shell's PATH and DISPATCHER_* settings, sh-quoted.
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert f"PATH={env['PATH']}\n" in text or f"PATH='{env['PATH']}'\n" in text
    assert "DISPATCHER_PORT=9999\n" in text
    assert 'DISPATCHER_AGENTS=\'{"x": ["y z"]}\'\n' in text
    # Again: the same unit is left as it is, and the env file is never overwritten.
    env_file.write_text("DISPATCHER_PORT=1234\n")
    again = cli(env, "install")
    assert again.returncode == 0, again.stderr
    assert f"unchanged {unit}" in again.stdout and f"kept {env_file}" in again.stdout
    assert env_file.read_text() == "DISPATCHER_PORT=1234\n"
    # A different unit (another kill grace) is refused without --force, and replaced with it.
    other = {**env, "DISPATCHER_KILL_GRACE_SECONDS": "20"}
    refused = cli(other, "install")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"dispatcher: {unit} exists and differs")
    assert "--force" in refused.stderr and "TimeoutStopSec=35\n" in unit.read_text()
    forced = cli(other, "install", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"replaced {unit}" in forced.stdout and "TimeoutStopSec=50\n" in unit.read_text()
    # status needs a manager: one line saying why not.
    status = cli(env, "status")
    assert status.returncode == 1
    assert status.stderr.startswith("dispatcher: no systemd user manager answers")
    # uninstall removes the unit (and an enable link), keeps the env file and the state.
    link = unit.parent / "default.target.wants" / "dispatcher.service"
    link.parent.mkdir()
    link.symlink_to(unit)
    gone = cli(env, "uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not link.is_symlink()
    assert f"removed {unit}" in gone.stdout and f"kept {env_file}" in gone.stdout
    assert env_file.exists()
    assert "not installed" in cli(env, "uninstall").stdout
    missing = cli(env, "status")
    assert missing.returncode == 1
    assert missing.stderr.startswith("dispatcher: not installed")


@pytest.mark.skipif(shutil.which("launchctl") is not None, reason="a real launchd is here")
def test_launchd_install_and_uninstall_without_launchctl(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    plist = tmp_path / "home" / "Library" / "LaunchAgents" / "dev.worktree-dispatcher.plist"
    done = cli(env, "install", "--manager", "launchd")
    assert done.returncode == 0, done.stderr
    assert plistlib.loads(plist.read_bytes())["Label"] == "dev.worktree-dispatcher"
    assert "not started: launchctl is not installed" in done.stdout
    uid = os.getuid()
    assert f"  launchctl bootstrap gui/{uid} {plist}\n" in done.stdout
    assert (tmp_path / "home" / "Library" / "Logs").is_dir()
    gone = cli(env, "uninstall", "--manager", "launchd")
    assert gone.returncode == 0, gone.stderr
    assert not plist.exists()
