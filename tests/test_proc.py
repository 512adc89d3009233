"""The subprocess wrapper: run, spawn in a new session, limit, kill the tree, wait, re-adopt.

Real processes only; liveness is read from Linux ``/proc`` and polled with a
deadline.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.errors import ProcessError
from dispatcher.process import forks, proc
from dispatcher.process.proc import Limits, Spawned
from tests.waiting import wait_until

PATH = "/usr/local/bin:/usr/bin:/bin"
ENV = {"PATH": PATH, "LANG": "C.UTF-8"}
# Seconds for waits that end as soon as the process does: reached only on failure,
# so generous for a loaded CI machine.
WAIT = 30.0


# ---------------------------------------------------------------- helpers


def gone(pid: int) -> bool:
    """No such process, or only a zombie left (it ran its last instruction)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return raw[raw.rindex(")") + 2] == "Z"


def script(path: Path, body: str, *, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip() != "", path.name, WAIT)
    return int(path.read_text().strip())


class Spawner:
    """Spawns children in a tmp dir and makes sure every one is killed and reaped.
    ``log_cap``: through the log writer (dispatcher/process/logpipe.py), as the runner does;
    ``fork_server``: the writer forked from it (dispatcher/process/zygote.py), as the runner
    does too."""

    def __init__(
        self,
        root: Path,
        log_cap: proc.LogCap | None = None,
        fork_server: forks.ForkServer | None = None,
    ) -> None:
        self.root = root
        self.log_cap = log_cap
        self.fork_server = fork_server
        self.children: list[Spawned] = []

    def __call__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin_path: Path | None = None,
        cwd: Path | None = None,
        limits: Limits | None = None,
    ) -> Spawned:
        child = proc.spawn(
            argv,
            cwd=cwd or self.root,
            env=env if env is not None else ENV,
            stdin_path=stdin_path,
            log_path=self.root / "logs" / "agent.log",
            exit_file=self.root / "exit",
            limits=limits,
            log_cap=self.log_cap,
            fork_server=self.fork_server,
        )
        # Forked or not, as asked (a fallback would test the other path twice).
        assert (child.popen is None) == (self.fork_server is not None)
        self.children.append(child)
        return child

    def cleanup(self) -> None:
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                proc.kill_tree(child.pid, grace=0.5)
                child.popen.wait(timeout=WAIT)
            elif child.popen is None and proc.is_alive(child.pid, child.start_time):
                proc.kill_tree(child.pid, child.start_time, grace=0.5)
                wait_until(lambda c=child: ended(c), f"pid {child.pid} to end", WAIT)  # type: ignore[misc]
        if self.fork_server is not None:
            self.fork_server.close()


def ended(child: Spawned) -> bool:
    """True once ``child`` has ended (and been reaped, if it is our own child)."""
    if child.popen is not None:
        return child.popen.poll() is not None
    return not proc.is_alive(child.pid, child.start_time)


def make_spawner(tmp_path: Path, how: str) -> Spawner:
    cap = proc.LogCap(1 << 20, 1, 4096) if how != "direct" else None
    return Spawner(tmp_path, cap, forks.ForkServer() if how == "forked" else None)


@pytest.fixture(params=["direct", "logpipe", "forked"])
def spawner(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Spawner]:
    """Every spawn test runs three times: output straight to the log, through the
    writer the wrapper starts, and through a writer forked from the fork server."""
    sp = make_spawner(tmp_path, request.param)
    try:
        yield sp
    finally:
        sp.cleanup()


@pytest.fixture(params=["direct", "logpipe"])
def own_spawner(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Spawner]:
    """:func:`spawner` for the tests of our own children (a forked writer is the fork
    server's child, reaped by the kernel)."""
    sp = make_spawner(tmp_path, request.param)
    try:
        yield sp
    finally:
        sp.cleanup()


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "agent.log").read_text()


# ---------------------------------------------------------------- run


def test_run_captures_output() -> None:
    result = proc.run(["sh", "-c", "echo out; echo err >&2"])
    assert result.returncode == 0
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.argv == ("sh", "-c", "echo out; echo err >&2")


def test_run_passes_input_cwd_and_env(tmp_path: Path) -> None:
    result = proc.run(
        ["sh", "-c", 'cat; pwd; echo "$ONLY"'],
        cwd=tmp_path,
        env={"PATH": PATH, "ONLY": "me"},
        input="fed\n",
    )
    assert result.stdout == f"fed\n{tmp_path}\nme\n"


def test_run_without_input_gets_empty_stdin() -> None:
    # stdin is /dev/null, never the test runner's: `cat` ends at once.
    assert proc.run(["cat"], timeout=10).stdout == ""


def test_run_check_failure_shows_command_code_and_stderr() -> None:
    with pytest.raises(ProcessError) as info:
        proc.run(["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"])
    message = info.value.message
    assert "sh -c" in message
    assert "exited 3" in message
    assert "it broke" in message
    assert "partial" in message


def test_run_without_check_returns_the_failure() -> None:
    result = proc.run(["sh", "-c", "echo nope >&2; exit 4"], check=False)
    assert result.returncode == 4
    assert result.stderr == "nope\n"


def test_run_missing_program() -> None:
    with pytest.raises(ProcessError, match="command not found: 'no-such-program-xyz'"):
        proc.run(["no-such-program-xyz", "--help"])


def test_run_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"timed out after 0\.3s"):
        proc.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 10


def test_run_non_executable_program_is_a_process_error(tmp_path: Path) -> None:
    tool = script(tmp_path / "tool.sh", "echo hi", mode=0o644)
    with pytest.raises(ProcessError):
        proc.run([str(tool)])


def test_run_missing_cwd_is_not_reported_as_missing_command(tmp_path: Path) -> None:
    with pytest.raises(ProcessError) as info:
        proc.run(["true"], cwd=tmp_path / "vanished")
    assert "command not found" not in info.value.message
    assert "vanished" in info.value.message


# ---------------------------------------------------------------- spawn


def test_spawn_appends_output_reads_stdin_and_records_exit(
    spawner: Spawner, tmp_path: Path
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "agent.log").write_text("earlier run\n")
    (tmp_path / "prompt.md").write_text("the prompt\n")
    agent = script(tmp_path / "agent.sh", "echo out; echo err >&2; cat; exit 7")

    child = spawner([str(agent)], stdin_path=tmp_path / "prompt.md")

    assert proc.wait(child, timeout=WAIT) == 7
    assert (tmp_path / "exit").read_text() == "7\n"
    assert proc.read_exit_file(child.exit_file) == 7
    log = log_of(tmp_path)
    assert log.startswith("earlier run\n")
    assert sorted(log.splitlines()[1:]) == ["err", "out", "the prompt"]


def test_spawn_removes_a_stale_exit_file(spawner: Spawner, tmp_path: Path) -> None:
    (tmp_path / "exit").write_text("99\n")
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 2"])
    assert proc.read_exit_file(child.exit_file) is None
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 2


def test_spawn_without_stdin_reads_nothing(spawner: Spawner, tmp_path: Path) -> None:
    child = spawner(["sh", "-c", "cat; echo done"])
    assert proc.wait(child, timeout=WAIT) == 0
    assert log_of(tmp_path) == "done\n"


def test_spawn_passes_exactly_the_given_env(
    spawner: Spawner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_SECRET", "must-not-leak")
    env = {"PATH": PATH, "AGENT_VAR": "a value with spaces", "EMPTY": ""}
    child = spawner(["env"], env=env)
    assert proc.wait(child, timeout=WAIT) == 0
    seen = dict(line.split("=", 1) for line in log_of(tmp_path).splitlines())
    # The `sh` wrapper may export its own bookkeeping (dash: PWD; bash: also SHLVL, _).
    shell_added = {"PWD", "SHLVL", "_"}
    assert {k: v for k, v in seen.items() if k not in shell_added} == env
    assert seen.get("PWD", str(tmp_path)) == str(tmp_path)
    assert "DAEMON_ONLY_SECRET" not in seen


def test_spawn_missing_program_fails_before_starting(tmp_path: Path) -> None:
    for argv in (["no-such-agent-xyz", "-p"], ["./no-such-agent.sh"], ["/nope/agent"]):
        with pytest.raises(ProcessError, match="not found"):
            proc.spawn(
                argv,
                cwd=tmp_path,
                env=ENV,
                stdin_path=None,
                log_path=tmp_path / "logs" / "agent.log",
                exit_file=tmp_path / "exit",
            )
    assert not (tmp_path / "logs").exists()
    assert not (tmp_path / "exit").exists()


def test_spawn_looks_up_the_program_on_the_childs_path(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script(bindir / "my-agent", "exit 0")
    with pytest.raises(ProcessError, match="not found on PATH"):
        proc.spawn(
            ["my-agent"],
            cwd=tmp_path,
            env={"PATH": PATH},
            stdin_path=None,
            log_path=tmp_path / "agent.log",
            exit_file=tmp_path / "exit",
        )
    child = proc.spawn(
        ["my-agent"],
        cwd=tmp_path,
        env={"PATH": f"{bindir}:{PATH}"},
        stdin_path=None,
        log_path=tmp_path / "agent.log",
        exit_file=tmp_path / "exit",
    )
    assert proc.wait(child, timeout=WAIT) == 0


def test_spawn_resolves_a_relative_program_against_cwd(
    spawner: Spawner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    (workdir / "tools").mkdir(parents=True)
    script(workdir / "tools" / "agent.sh", "pwd; exit 5")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the daemon's own cwd must not matter

    child = spawner(["./tools/agent.sh"], cwd=workdir)
    assert proc.wait(child, timeout=WAIT) == 5
    assert log_of(tmp_path) == f"{workdir}\n"

    with pytest.raises(ProcessError, match="not found or not executable"):
        spawner(["./tools/agent.sh"], cwd=elsewhere)


def test_spawn_refuses_a_non_executable_file(tmp_path: Path) -> None:
    agent = script(tmp_path / "agent.sh", "exit 0", mode=0o644)
    assert not agent.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    with pytest.raises(ProcessError, match="not executable"):
        proc.spawn(
            [str(agent)],
            cwd=tmp_path,
            env=ENV,
            stdin_path=None,
            log_path=tmp_path / "agent.log",
            exit_file=tmp_path / "exit",
        )
    assert not (tmp_path / "agent.log").exists()


def test_spawn_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    with pytest.raises(ProcessError, match="not executable"):
        proc.spawn(
            ["./agent"],
            cwd=tmp_path,
            env=ENV,
            stdin_path=None,
            log_path=tmp_path / "agent.log",
            exit_file=tmp_path / "exit",
        )


def test_spawn_arguments_are_never_parsed_by_a_shell(spawner: Spawner, tmp_path: Path) -> None:
    hostile = "$(touch pwned); `touch pwned2` && echo 'quoted' \"x\" ;"
    child = spawner(["printf", "%s\\n", hostile, "two words"])
    assert proc.wait(child, timeout=WAIT) == 0
    assert log_of(tmp_path) == f"{hostile}\ntwo words\n"
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


# ---------------------------------------------------------------- sessions and kill_tree


def test_spawned_child_leads_its_own_session(spawner: Spawner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
    assert os.getsid(child.pid) == child.pid
    assert os.getpgid(child.pid) == child.pid
    assert os.getsid(child.pid) != os.getsid(0)
    assert child.start_time == proc.process_start_time(child.pid)
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 0


def test_kill_tree_kills_child_and_grandchild(spawner: Spawner, tmp_path: Path) -> None:
    agent = script(
        tmp_path / "agent.sh",
        "echo $$ > child.pid\nsleep 300 &\necho $! > gc.pid\nwait",
    )
    child = spawner([str(agent)])
    agent_pid = read_pid(tmp_path / "child.pid")
    grandchild = read_pid(tmp_path / "gc.pid")
    assert not gone(agent_pid)
    assert not gone(grandchild)
    assert os.getpgid(grandchild) == child.pid

    proc.kill_tree(child.pid, child.start_time, grace=5)

    for pid in (child.pid, agent_pid, grandchild):
        wait_until(lambda pid=pid: gone(pid), f"pid {pid} to end", WAIT)  # type: ignore[misc]
    if spawner.log_cap is None:
        assert child.popen is not None  # the wrapper died of it too, before recording anything
        assert child.popen.wait(timeout=WAIT) == -signal.SIGTERM
        assert proc.read_exit_file(child.exit_file) is None
    else:  # the log writer ignores SIGTERM and records the agent's end
        assert proc.signal_of(proc.wait(child, timeout=WAIT)) == signal.SIGTERM
        assert proc.read_exit_file(child.exit_file) == 128 + signal.SIGTERM


def test_kill_tree_sigkills_what_ignores_sigterm(spawner: Spawner, tmp_path: Path) -> None:
    # `trap '' TERM` is inherited across exec: the sleep ignores SIGTERM too.
    agent = script(tmp_path / "agent.sh", "trap '' TERM\necho $$ > child.pid\nexec sleep 300")
    child = spawner([str(agent)])
    agent_pid = read_pid(tmp_path / "child.pid")
    wait_until(
        lambda: Path(f"/proc/{agent_pid}/comm").read_text().strip() == "sleep", "the exec", WAIT
    )

    grace = 0.4
    started = time.monotonic()
    proc.kill_tree(child.pid, child.start_time, grace=grace)
    elapsed = time.monotonic() - started

    assert elapsed >= grace, "the SIGTERM-ignoring child was killed before the grace ran out"
    wait_until(lambda: gone(agent_pid), "the SIGTERM-ignoring agent to be killed", WAIT)
    wait_until(lambda: ended(child), "the writer to end", WAIT)


def test_kill_tree_returns_early_when_the_group_ends(spawner: Spawner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
    started = time.monotonic()
    proc.kill_tree(child.pid, child.start_time, grace=30)
    assert time.monotonic() - started < 10
    if child.popen is not None:
        assert child.popen.wait(timeout=WAIT) == -signal.SIGTERM
    else:  # a forked writer ignores SIGTERM as soon as it runs the agent (which it ends)
        assert proc.signal_of(proc.wait(child, timeout=WAIT)) in (signal.SIGTERM, signal.SIGKILL)


def test_kill_tree_with_a_stale_start_time_signals_nothing(
    spawner: Spawner, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 4"])
    proc.kill_tree(child.pid, child.start_time + 1, grace=0.1)
    assert proc.is_alive(child.pid, child.start_time)
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 4


def test_kill_tree_of_a_finished_group_is_harmless(spawner: Spawner) -> None:
    child = spawner(["true"])
    assert proc.wait(child, timeout=WAIT) == 0
    proc.kill_tree(child.pid, grace=0.1)  # reaped: ProcessLookupError swallowed
    proc.kill_tree(child.pid, child.start_time, grace=0.1)


# ---------------------------------------------------------------- liveness


def test_process_start_time_of_self() -> None:
    start = proc.process_start_time(os.getpid())
    assert isinstance(start, int)
    assert start > 0
    assert proc.process_start_time(os.getpid()) == start


def test_is_alive_checks_pid_and_start_time(spawner: Spawner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
    assert proc.is_alive(child.pid, child.start_time)
    assert not proc.is_alive(child.pid, child.start_time + 1)  # a recycled pid
    assert not proc.is_alive(child.pid, child.start_time - 1)
    release.touch()
    wait_until(lambda: ended(child), "the child to end", WAIT)
    assert not proc.is_alive(child.pid, child.start_time)
    if child.popen is not None:  # reaped by us (a forked writer: by the kernel, at once)
        assert proc.process_start_time(child.pid) is None


def test_is_alive_is_false_for_a_zombie(own_spawner: Spawner) -> None:
    child = own_spawner(["true"])
    # Not reaped yet: the wrapper lingers as a zombie with the same start time.
    wait_until(lambda: proc.read_exit_file(child.exit_file) is not None, "the exit file", WAIT)
    wait_until(lambda: not proc.is_alive(child.pid, child.start_time), "the zombie", WAIT)
    assert proc.process_start_time(child.pid) == child.start_time
    assert child.popen is not None
    assert child.popen.wait(timeout=WAIT) == 0


def test_is_alive_is_false_for_a_pid_that_does_not_exist() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    unused = next(p for p in range(pid_max - 1, 1, -1) if not Path(f"/proc/{p}").exists())
    assert proc.process_start_time(unused) is None
    assert not proc.is_alive(unused, 12345)


# ---------------------------------------------------------------- wait


def test_wait_on_own_child_times_out_then_returns(spawner: Spawner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    child = spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 6"])
    assert proc.wait(child, timeout=0.1) is None
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 6


def test_wait_reports_an_agent_killed_by_a_signal(spawner: Spawner, tmp_path: Path) -> None:
    agent = script(tmp_path / "agent.sh", "echo $$ > child.pid\nexec sleep 300")
    child = spawner([str(agent)])
    agent_pid = read_pid(tmp_path / "child.pid")
    os.kill(agent_pid, signal.SIGKILL)
    code = proc.wait(child, timeout=WAIT)
    assert code == 128 + signal.SIGKILL
    assert "SIGKILL" in proc.describe_status(code)


@pytest.mark.parametrize("reap", [False, True], ids=["zombie", "reaped"])
def test_wait_on_a_readopted_child(own_spawner: Spawner, tmp_path: Path, reap: bool) -> None:
    release = tmp_path / "release"
    child = own_spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 5"])
    adopted = Spawned(child.pid, child.start_time, child.exit_file, popen=None)
    assert child.popen is not None
    popen = child.popen
    reaper = threading.Thread(target=popen.wait, kwargs={"timeout": 20})
    if reap:  # the old parent reaps it (as it would once it is gone for good)
        reaper.start()

    started = time.monotonic()
    assert proc.wait(adopted, timeout=0.2) is None
    assert time.monotonic() - started >= 0.2

    release.touch()
    assert proc.wait(adopted, timeout=WAIT) == 5

    if reap:
        reaper.join(timeout=10)
    assert popen.wait(timeout=WAIT) == 5


def test_wait_on_a_readopted_child_killed_before_recording(
    own_spawner: Spawner, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    child = own_spawner(["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
    adopted = Spawned(child.pid, child.start_time, child.exit_file, popen=None)
    os.killpg(child.pid, signal.SIGKILL)
    assert proc.wait(adopted, timeout=WAIT) == -signal.SIGKILL
    assert child.popen is not None
    assert child.popen.wait(timeout=WAIT) == -signal.SIGKILL


# ---------------------------------------------------------------- resource limits

MiB = 2**20


def limits_of(text: str) -> dict[str, tuple[str, str]]:
    """``/proc/<pid>/limits`` as {name: (soft, hard)}."""
    found = {}
    for line in text.splitlines()[1:]:
        name, soft, hard = re.split(r"\s{2,}", line.strip())[:3]
        found[name] = (soft, hard)
    return found


def test_limits_bind_the_agent_and_its_children_but_not_the_wrapper(
    spawner: Spawner, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    # The agent starts a child that reports its limits, then waits to be released.
    agent = script(
        tmp_path / "agent.sh",
        "sh -c 'cat /proc/self/limits' > child-limits.tmp && mv child-limits.tmp child-limits\n"
        f"while [ ! -e {release} ]; do sleep 0.02; done",
    )
    child = spawner([str(agent)], limits=Limits(memory_bytes=512 * MiB + 100, cpu_seconds=7))
    wait_until((tmp_path / "child-limits").exists, "the grandchild's limits", WAIT)

    seen = limits_of((tmp_path / "child-limits").read_text())
    assert seen["Max address space"] == (str(512 * MiB), str(512 * MiB))  # whole KiB
    assert seen["Max cpu time"] == ("7", str(7 + proc.CPU_KILL_AFTER))
    assert seen["Max core file size"][0] == "0"
    # The wrapper that records the exit status keeps the daemon's limits.
    wrapper = limits_of(Path(f"/proc/{child.pid}/limits").read_text())
    own = limits_of(Path("/proc/self/limits").read_text())
    for name in ("Max address space", "Max cpu time", "Max core file size"):
        assert wrapper[name] == own[name]

    release.touch()
    assert proc.wait(child, timeout=WAIT) == 0


def test_no_limits_leave_the_agent_as_the_daemon_is(spawner: Spawner, tmp_path: Path) -> None:
    child = spawner(["cat", "/proc/self/limits"], limits=Limits())
    assert proc.wait(child, timeout=WAIT) == 0
    assert limits_of(log_of(tmp_path)) == limits_of(Path("/proc/self/limits").read_text())
    assert proc.wrapper_script(Limits()) == proc.wrapper_script(None)


@pytest.mark.parametrize(("allocate_mib", "expected"), [(16, 0), (512, 1)], ids=["under", "over"])
def test_memory_limit(spawner: Spawner, tmp_path: Path, allocate_mib: int, expected: int) -> None:
    code = f"b = bytearray({allocate_mib} * 2**20); print('allocated', len(b) >> 20)"
    child = spawner([sys.executable, "-c", code], limits=Limits(memory_bytes=256 * MiB))
    assert proc.wait(child, timeout=WAIT) == expected
    if expected == 0:
        assert log_of(tmp_path) == f"allocated {allocate_mib}\n"
    else:
        assert "MemoryError" in log_of(tmp_path)


def test_cpu_limit_ends_a_busy_agent_with_sigxcpu(spawner: Spawner) -> None:
    started = time.monotonic()
    child = spawner(["sh", "-c", "while :; do :; done"], limits=Limits(cpu_seconds=1))
    code = proc.wait(child, timeout=WAIT)
    assert code is not None, "the busy agent outlived its CPU limit"
    # It does not handle SIGXCPU, so the soft limit ends it; SIGKILL would come later.
    assert proc.signal_of(code) == signal.SIGXCPU
    assert proc.describe_status(code) == f"signal {signal.SIGXCPU.value} (SIGXCPU)"
    # One second of CPU, not of wall time: a loaded machine takes several. The bound
    # shows the limit ended it, not a run on for long.
    assert time.monotonic() - started < WAIT


def test_a_limit_above_the_daemons_hard_limit_is_lowered_to_it(tmp_path: Path) -> None:
    # A daemon whose own hard CPU limit is 100 s asks for 1000 s.
    program = (
        "import sys; from pathlib import Path; from dispatcher.process import proc\n"
        "root = Path(sys.argv[1])\n"
        "child = proc.spawn(['cat', '/proc/self/limits'], cwd=root, env={}, stdin_path=None,\n"
        "    log_path=root / 'agent.log', exit_file=root / 'exit',\n"
        "    limits=proc.Limits(cpu_seconds=1000, memory_bytes=2**40))\n"
        "code = proc.wait(child, timeout=30)\n"
        "sys.exit('cat did not end' if code is None else code)\n"
    )
    proc.run(
        [
            "sh",
            "-c",
            'ulimit -t 100 && ulimit -v 4194304 && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            program,
            str(tmp_path),
        ],
        env={**ENV, "PYTHONPATH": str(Path(proc.__file__).parent.parent)},
    )
    seen = limits_of((tmp_path / "agent.log").read_text())
    assert seen["Max cpu time"] == ("100", "100")
    assert seen["Max address space"] == (str(4 * 2**30), str(4 * 2**30))


@pytest.mark.parametrize(
    "limits", [{"memory_bytes": 0}, {"memory_bytes": 1023}, {"cpu_seconds": 0}, {"cpu_seconds": -1}]
)
def test_nonsensical_limits_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least"):
        Limits(**limits)


# ---------------------------------------------------------------- describe_status


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "exit 0"),
        (3, "exit 3"),
        (128, "exit 128"),
        (-9, "signal 9 (SIGKILL)"),
        (137, "signal 9 (SIGKILL)"),
        (-15, "signal 15 (SIGTERM)"),
        (143, "signal 15 (SIGTERM)"),
        (None, "unknown"),
    ],
)
def test_describe_status(code: int | None, expected: str) -> None:
    assert proc.describe_status(code) == expected


def test_describe_status_of_an_exit_code_that_is_no_signal() -> None:
    assert proc.describe_status(255) == "exit 255"


# ---------------------------------------------------------------- claims (exactly once)


def claimed_spawn(
    tmp_path: Path, argv: list[str], claim: Path, fork_server: forks.ForkServer | None = None
) -> Spawned:
    child = proc.spawn(
        argv, cwd=tmp_path, env=ENV, stdin_path=None, log_path=tmp_path / "agent.log",
        exit_file=tmp_path / "exit", claim_file=claim,
        log_cap=proc.LogCap(1 << 20, 1, 4096), fork_server=fork_server,
    )  # fmt: skip
    assert (child.popen is None) == (fork_server is not None)
    return child


@pytest.fixture(params=["wrapper", "forked"])
def fork_server(request: pytest.FixtureRequest) -> Iterator[forks.ForkServer | None]:
    """The claim tests run for the wrapper's claim and for a forked writer's."""
    server = forks.ForkServer() if request.param == "forked" else None
    yield server
    if server is not None:
        server.close()


def test_the_wrapper_claims_the_spawn_with_its_pid_before_the_agent_runs(
    tmp_path: Path, fork_server: forks.ForkServer | None
) -> None:
    claim, release = tmp_path / "spawn-abc", tmp_path / "release"
    agent = script(
        tmp_path / "agent.sh",
        # seen appears whole (the shell creates a redirect's file before cat writes it)
        f'cat "{claim}" > seen.tmp && mv seen.tmp seen\n'
        f"while [ ! -e {release} ]; do sleep 0.02; done",
    )
    child = claimed_spawn(tmp_path, [str(agent)], claim, fork_server)
    # A forked writer's command line is the fork server's: its claim names its start too.
    holds = f"{child.pid}\n" if fork_server is None else f"{child.pid} {child.start_time}\n"
    try:
        wait_until((tmp_path / "seen").exists, "the agent", WAIT)
        assert (tmp_path / "seen").read_text() == holds  # written before it ran
        assert proc.claim_holder(claim) == child.pid
        assert proc.runs_spawn(child.pid, claim) == child.start_time
        assert proc.runs_spawn(child.pid, tmp_path / "spawn-other") is None
        assert proc.take_claim(claim) is False  # a recovering daemon loses: it started
    finally:
        release.touch()
        assert proc.wait(child, timeout=WAIT) == 0
    assert proc.runs_spawn(child.pid, claim) is None  # ended


def test_a_spawn_whose_claim_a_daemon_took_never_runs_its_agent(
    tmp_path: Path, fork_server: forks.ForkServer | None
) -> None:
    claim = tmp_path / "spawn-abc"
    assert proc.take_claim(claim) is True
    assert proc.take_claim(claim) is False  # once
    assert proc.claim_holder(claim) is None  # a daemon's claim, no wrapper's
    child = claimed_spawn(tmp_path, ["sh", "-c", "touch ran"], claim, fork_server)
    code = proc.wait(child, timeout=WAIT)  # a forked writer's exit code is nobody's
    assert code == 0 if fork_server is None else code is not None
    assert not (tmp_path / "ran").exists()
    assert not child.exit_file.exists()
    assert claim.read_text() == f"{proc.DAEMON_CLAIM}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_an_empty_claim_with_no_wrapper_alive_means_nothing_ran(tmp_path: Path) -> None:
    claim = tmp_path / "spawn-abc"
    claim.touch()  # a wrapper killed between creating the file and writing its pid
    started = time.monotonic()
    assert proc.claim_holder(claim, wait=0.2) is None
    assert time.monotonic() - started >= 0.2
    assert proc.find_spawn(claim) is None


def test_an_empty_claim_finds_its_wrapper_while_it_lives(tmp_path: Path) -> None:
    claim = tmp_path / "spawn-abc"
    claim.touch()
    # Looks like a wrapper that is still writing its pid: the claim path is in its argv.
    import subprocess

    holder = subprocess.Popen(["sh", "-c", "sleep 30", "dispatcher-agent", str(claim)])
    try:
        wait_until(lambda: proc.find_spawn(claim) == holder.pid, "the holder", WAIT)
        assert proc.claim_holder(claim, wait=0.1) == holder.pid
    finally:
        holder.kill()
        holder.wait()
