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
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from dispatcher.process import cgroups
from tests.daemon_fixture import IDENTITY, pid_alive
from tests.daemonproc import clean_env, dispatcher_argv, free_port
from tests.gitutil import init_repo
from tests.waiting import wait_until

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
    for manager, command in (
        ("systemd", "systemctl --user daemon-reload"),
        ("launchd", f"launchctl bootstrap gui/{os.getuid()}"),
    ):
        printed = cli(env, "install", "--print", "--manager", manager)
        assert printed.returncode == 0, printed.stderr
        assert command in printed.stderr  # what install would run, beside the unit
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


def test_an_unwritable_config_dir_is_one_line(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    for config_home in (blocker, blocker / "deeper"):
        done = cli({**env, "XDG_CONFIG_HOME": str(config_home)}, "install")
        assert done.returncode == 1
        assert done.stderr.startswith("dispatcher: cannot write "), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


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


# ------------------------------------------------------------------ a real user manager
#
# PID 1 here is not systemd, but a systemd user manager (`systemd --user`) runs anyway, as
# root, given three things, all made by the fixture and undone after it:
# * its own cgroup: a fresh child of this process's cgroup (in the cgroup2 tree, and in the
#   v1 name=systemd tree where the machine has one, as here). Never the cgroup it is in:
#   a manager takes its cgroup for its own and moves every process in it into init.scope.
# * the "booted with systemd" mark /run/systemd/system/, which it checks before anything
#   (sd_booted) and exits 1 without: made on a tmpfs over /run/systemd in a private mount
#   namespace (`unshare --mount`), so the machine's /run is not touched. Where the machine
#   was booted with systemd the mark is there already and no namespace is needed.
# * XDG_RUNTIME_DIR (its sockets) and HOME, XDG_CONFIG_HOME in the test's tmp dir.
# No journald runs here, so the daemon's log is read from a file a drop-in adds
# (StandardOutput=append:); the unit under test is the one `service install` wrote.

SYSTEMD = next(
    (p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if os.access(p, os.X_OK)),
    None,
)
BOOT_MARK = Path("/run/systemd/system")


def _own_cgroups() -> list[Path]:
    """Where this process's cgroups are: its cgroup2 one, and its v1 name=systemd one."""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    own = Path("/proc/self/cgroup").read_text()
    found = []
    mount = cgroups.cgroup2_mount(mountinfo)
    path = cgroups.own_cgroup(own)
    if mount is not None and path is not None:
        found.append(mount / path.lstrip("/"))
    named = [line.split(":", 2)[2] for line in own.splitlines() if ":name=systemd:" in line]
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if named and right.startswith("cgroup ") and "name=systemd" in right.split()[-1]:
            found.append(Path(left.split()[4]) / named[0].lstrip("/"))
    return found


def _cannot_run_a_user_manager() -> str | None:
    if SYSTEMD is None or shutil.which("systemctl") is None:
        return "systemd is not installed"
    if os.geteuid() != 0:
        return "a user manager in a cgroup of its own needs root here (it is made by hand)"
    if not BOOT_MARK.is_dir():
        probe = subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, text=True, timeout=30, check=False
        ) if shutil.which("unshare") and BOOT_MARK.parent.is_dir() else None  # fmt: skip
        if probe is None or probe.returncode != 0:
            why = probe.stderr.strip() if probe is not None else "no unshare or no /run/systemd"
            return (
                f"not booted with systemd, and its mark cannot be faked in a mount namespace: {why}"
            )
    if not _own_cgroups():
        return "no cgroup2 file system"
    for parent in _own_cgroups():
        probe_dir = parent / f"dispatcher-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe_dir.mkdir()
            probe_dir.rmdir()
        except OSError as exc:
            return f"cannot make a cgroup under {parent}: {exc.strerror}"
    return None


def _remove_tree(top: Path) -> None:
    """Kill what is in the cgroup ``top`` and below it (in the cgroup2 tree, which holds every
    process; the v1 name=systemd tree mirrors it) and remove them, deepest first."""
    if not top.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        if (top / "cgroup.controllers").exists():
            cgroups.remove(Path(dirpath))
        else:
            Path(dirpath).rmdir()


@pytest.fixture
def user_manager(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `systemd --user`; yields the environment that reaches it."""
    reason = _cannot_run_a_user_manager()
    if reason is not None:
        pytest.skip(f"no systemd user manager can run here: {reason}")
    assert SYSTEMD is not None
    name = f"dispatcher-test-{uuid.uuid4().hex[:12]}"
    tops = [parent / name for parent in _own_cgroups()]
    env = service_env(tmp_path, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    # The shell joins the fresh cgroups and execs the manager only if it is in them now: a
    # manager started in pytest's own cgroup (the machine's root one, here) would take every
    # process in it for its own.
    join = (
        'for f in "$@"; do echo $$ > "$f/cgroup.procs" || exit 97; done; '
        f"grep -q '/{name}$' /proc/self/cgroup || exit 98; "
    )
    if BOOT_MARK.is_dir():
        argv = ["/bin/sh", "-c", join + 'exec "$0" --user', SYSTEMD, *map(str, tops)]
    else:
        fake = f"mount -t tmpfs tmpfs {BOOT_MARK.parent} && mkdir {BOOT_MARK} && "
        argv = ["unshare", "--mount", "--propagation", "private",
                "/bin/sh", "-c", join + fake + 'exec "$0" --user', SYSTEMD, *map(str, tops)]  # fmt: skip
    manager: subprocess.Popen[bytes] | None = None
    try:
        for top in tops:
            top.mkdir()
        with open(tmp_path / "manager.log", "wb") as log:
            manager = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        running = manager

        def answers() -> bool:
            if running.poll() is not None:
                raise AssertionError(
                    f"systemd --user exited {running.returncode}: "
                    f"{(tmp_path / 'manager.log').read_text()}"
                )
            # (`is-system-running` says "offline" where PID 1 is not systemd.)
            state = subprocess.run(
                ["systemctl", "--user", "show", "--property=SystemState", "--value"], env=env,
                capture_output=True, text=True, timeout=30, check=False,
            ).stdout.strip()  # fmt: skip
            return state in ("running", "degraded")

        wait_until(answers, "the user manager to answer", timeout=30, interval=0.1)
        yield env
    finally:
        # Kill first (cgroup.kill: the whole tree at once), then reap and remove: a timeout
        # that lands in this teardown cannot leave a manager, daemon or agent running.
        for top in tops:
            cgroups.kill(top)
        if manager is not None:
            manager.kill()
            manager.wait(30)
        for top in tops:
            _remove_tree(top)


def _systemctl(env: Mapping[str, str], *args: str) -> str:
    return subprocess.run(
        ["systemctl", "--user", *args], env=dict(env),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip


def _shown(env: Mapping[str, str], prop: str) -> str:
    return _systemctl(env, "show", "-p", prop, "--value", "dispatcher.service")


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.url, self.headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=60)

    def post(self, path: str, json: object) -> httpx.Response:
        return httpx.post(self.url + path, json=json, headers=self.headers, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)  # a user manager, four daemon starts, a 5 s restart delay, a busy machine
def test_the_user_manager_starts_restarts_and_stops_the_daemon_cleanly(
    user_manager: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "state %i dir"  # a space, a specifier: quoted for systemd, read by it
    env = {
        **user_manager, "DISPATCHER_PORT": str(port), "DISPATCHER_STATE_DIR": str(state),
        "DISPATCHER_KILL_GRACE_SECONDS": "1", "DISPATCHER_POOL_SIZE": "0",
    }  # fmt: skip
    unit = Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "dispatcher.service"
    daemon_log = tmp_path / "daemon.log"
    dropin = unit.parent / "dispatcher.service.d" / "log.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text(f"[Service]\nStandardOutput=append:{daemon_log}\nStandardError=inherit\n")

    done = cli(env, "install")
    assert done.returncode == 0, done.stderr
    assert "ran: systemctl --user start dispatcher.service" in done.stdout, done.stdout
    wait_until(lambda: _health(port), lambda: f"/health: {daemon_log.read_text()}", timeout=60)
    pid = int(_shown(env, "MainPID"))
    own = cgroups.own_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    assert own is not None and own.endswith("/app.slice/dispatcher.service")
    assert _shown(env, "Environment") == f'"DISPATCHER_STATE_DIR={state}"'
    assert (state / "token").exists()  # the daemon took the state dir the unit pinned
    status = cli(env, "status")
    assert status.returncode == 0 and "active (running)" in status.stdout, status.stdout
    # journalctl reads the journal, of which there is none here (no journald): it must
    # still take the arguments (a bad option exits 1).
    logs = cli(env, "logs", "-n", "5")
    assert logs.returncode == 0, logs.stdout + logs.stderr

    # A job's agent runs in a cgroup of its own below the daemon's (Delegate=yes).
    api = Api(port, (state / "token").read_text().strip())
    gate, started = tmp_path / "go", tmp_path / "started"
    script = tmp_path / "agent.sh"
    script.write_text(
        f'#!/bin/sh\n: > "{started}"\n'
        f'while [ ! -f "{gate}" ]; do sleep 0.05; done\necho done > out.txt\n'
    )
    script.chmod(0o755)
    repo = init_repo(tmp_path / "r")
    assert api.post("/repos", json={"path": str(repo), "name": "r"}).status_code == 201
    body = {"repo": "r", "prompt": "x", "command": [str(script)]}
    job_id = api.post("/jobs", json=body).json()["id"]
    agent = wait_until(
        lambda: (job := api.get(f"/jobs/{job_id}").json())["state"] == "running" and job["pid"],
        "the agent to start", timeout=60, max_interval=0.25,
    )  # fmt: skip
    # The job's pid is its wrapper's from the spawn on; the wrapper joins the cgroup
    # first thing, before it runs the agent: so once the agent runs, it is there.
    wait_until(started.exists, "the agent's first line", timeout=60)
    agent_cgroup = cgroups.own_cgroup(Path(f"/proc/{agent}/cgroup").read_text())
    assert agent_cgroup is not None
    assert agent_cgroup.startswith(own + "/dispatcher-"), agent_cgroup
    assert f"/job-{job_id}-" in agent_cgroup

    # A stop by the manager is the daemon's clean SIGTERM stop: exit 0, its log says so,
    # and the agent is left running for the next start (KillMode=process).
    _systemctl(env, "stop", "dispatcher.service")
    assert _shown(env, "ActiveState") == "inactive"
    assert _shown(env, "ExecMainStatus") == "0"
    assert not pid_alive(pid)
    assert daemon_log.read_text().count("stopped cleanly") == 1
    assert pid_alive(agent)
    assert cli(env, "status").returncode == 3  # systemctl's code for a stopped unit

    # The next start re-adopts it and finishes the job.
    _systemctl(env, "start", "dispatcher.service")
    wait_until(lambda: _health(port), lambda: f"/health: {daemon_log.read_text()}", timeout=60)
    gate.touch()
    wait_until(
        lambda: api.get(f"/jobs/{job_id}").json()["state"] == "succeeded",
        lambda: f"the job to succeed: {api.get(f'/jobs/{job_id}').json()}",
        timeout=60,
    )

    # A different unit (another kill grace) replaces the running one only with --force,
    # which stops the old daemon (cleanly) and starts the new one.
    other = {**env, "DISPATCHER_KILL_GRACE_SECONDS": "2"}
    assert cli(other, "install").returncode == 1
    forced = cli(other, "install", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "ran: systemctl --user disable --now dispatcher.service" in forced.stdout
    assert _shown(env, "TimeoutStopUSec") == "32s"
    wait_until(lambda: _health(port), lambda: f"/health: {daemon_log.read_text()}", timeout=60)
    assert daemon_log.read_text().count("stopped cleanly") == 2

    # A crash (SIGKILL) is restarted (Restart=on-failure, after RestartSec=5).
    crashed = int(_shown(env, "MainPID"))
    os.kill(crashed, signal.SIGKILL)
    wait_until(
        lambda: _shown(env, "MainPID") not in ("0", str(crashed)) and _health(port),
        "the manager to restart the daemon", timeout=60, interval=0.2,
    )  # fmt: skip

    # uninstall stops it (cleanly), disables it and removes the unit: nothing is left.
    last = int(_shown(env, "MainPID"))
    gone = cli(env, "uninstall")
    assert gone.returncode == 0, gone.stderr
    assert "ran: systemctl --user disable --now dispatcher.service" in gone.stdout
    assert not unit.exists() and not pid_alive(last)
    assert daemon_log.read_text().count("stopped cleanly") == 3
    mount = cgroups.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert mount is not None
    unit_cgroup = mount / own.lstrip("/")
    left = [pid for procs in unit_cgroup.rglob("cgroup.procs") for pid in procs.read_text().split()]
    assert left == [], f"left in {unit_cgroup}: {left}"
