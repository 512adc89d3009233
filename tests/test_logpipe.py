"""The log writer (dispatcher/process/logpipe.py) run as the wrapper runs it, and forked from
the fork server (dispatcher/process/zygote.py) as the runner has it: a real process with a
real agent, its output capped as it is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.agents import output
from dispatcher.process import forks, logpipe, proc, zygote
from tests.waiting import wait_until

WAIT = 30.0


@dataclass
class Writer:
    """A log writer running an agent: started as a script (``popen``) or forked."""

    pid: int
    exit_file: Path
    popen: subprocess.Popen[bytes] | None = None
    start_time: int = 0

    def wait(self) -> int | None:
        """The writer's exit status (a forked writer's: what it recorded)."""
        if self.popen is not None:
            return self.popen.wait(WAIT)
        wait_until(lambda: not proc.is_alive(self.pid, self.start_time), "the writer", WAIT)
        return proc.read_exit_file(self.exit_file)


@pytest.fixture(params=["script", "forked"])
def how(request: pytest.FixtureRequest) -> Iterator[forks.ForkServer | None]:
    """Each test runs with the writer started as a script and forked from a fork server."""
    server = forks.ForkServer() if request.param == "forked" else None
    yield server
    if server is not None:
        server.close()


def start_writer(
    tmp_path: Path, how: forks.ForkServer | None, argv: list[str], *,
    max_bytes: int = 1 << 20, keep: int = 1, head: int = 4096,
) -> Writer:  # fmt: skip
    """The writer running ``argv`` with the log ``agent.log`` in ``tmp_path``, in a
    session of its own."""
    log, exit_file = tmp_path / "agent.log", tmp_path / "exit"
    if how is None:
        writer = [sys.executable, "-I", "-S", str(proc.LOGPIPE), str(exit_file), str(log),
                  str(max_bytes), str(keep), str(head), "", "claim", "--", *argv]  # fmt: skip
        popen = subprocess.Popen(writer, cwd=tmp_path, start_new_session=True)
        return Writer(popen.pid, exit_file, popen)
    request = zygote.Request(
        argv=argv, env=dict(os.environ), cwd=str(tmp_path), exit_file=str(exit_file),
        log_path=str(log), max_bytes=max_bytes, keep=keep, head_bytes=head, claim="", cgroup="",
    )  # fmt: skip
    with open(os.devnull, "rb") as stdin, open(log, "ab") as out:
        forked = how.spawn(request, stdin.fileno(), out.fileno())
    assert forked is not None
    return Writer(forked[0], exit_file, start_time=forked[1])


def run_writer(
    tmp_path: Path, how: forks.ForkServer | None, agent: str, *,
    max_bytes: int = 1 << 20, keep: int = 1, head: int = 4096,
) -> tuple[int | None, Path]:  # fmt: skip
    """Run ``agent`` (a sh script) under the writer; (its exit status, the log path)."""
    writer = start_writer(
        tmp_path, how, ["sh", "-c", agent], max_bytes=max_bytes, keep=keep, head=head
    )
    return writer.wait(), tmp_path / "agent.log"


def test_exit_status_reaches_the_exit_file_and_the_writers_own(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    code, log = run_writer(tmp_path, how, "echo out; echo err >&2; exit 3")
    assert code == 3
    assert proc.read_exit_file(tmp_path / "exit") == 3
    assert log.read_text() == "out\nerr\n"


def test_an_agent_killed_by_a_signal_is_recorded_as_the_shell_would(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    code, _ = run_writer(tmp_path, how, "kill -KILL $$")
    assert code == 128 + signal.SIGKILL
    assert proc.signal_of(proc.read_exit_file(tmp_path / "exit")) == signal.SIGKILL


def test_rotation_keeps_the_cap_the_names_and_the_head(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    cap = 4096
    agent = (
        'echo "session-id-line"; i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done'
    )
    code, log = run_writer(tmp_path, how, agent, max_bytes=cap, keep=2, head=100)
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("agent.log"))
    assert names == ["agent.log", "agent.log.1", "agent.log.2", "agent.log.head"]
    for path in (log, tmp_path / "agent.log.1", tmp_path / "agent.log.2"):
        assert path.stat().st_size <= cap
        text = path.read_text()
        assert text.startswith("[dispatcher] log rotated: older output in agent.log.1\n")
        assert text.endswith("\n")  # cut at line ends
    assert log.read_text().endswith("line 2999\n")
    newest = (tmp_path / "agent.log.1").read_text().splitlines()[-1]
    assert log.read_text().splitlines()[1] == f"line {int(newest.split()[1]) + 1}"  # no gap
    head = tmp_path / "agent.log.head"
    assert head.read_text().startswith("session-id-line\n")
    assert head.stat().st_size == 100
    assert proc.head_path(log) == head


def test_keep_zero_drops_older_output(tmp_path: Path, how: forks.ForkServer | None) -> None:
    code, log = run_writer(
        tmp_path, how, "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done", max_bytes=4096,
        keep=0,
    )  # fmt: skip
    assert code == 0
    assert not (tmp_path / "agent.log.1").exists()
    assert log.read_text().startswith("[dispatcher] log rotated: older output dropped\n")
    assert log.stat().st_size <= 4096


def test_a_line_longer_than_the_cap_is_cut(tmp_path: Path, how: forks.ForkServer | None) -> None:
    code, log = run_writer(tmp_path, how, "head -c 20000 /dev/zero | tr '\\0' x", max_bytes=4096)
    assert code == 0
    total = sum(p.stat().st_size for p in (log, tmp_path / "agent.log.1"))
    assert total <= 2 * 4096
    assert log.stat().st_size <= 4096


def test_the_last_output_is_drained_and_left_behind_writers_are_not_waited_for(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    # A background process keeps the pipe open for 30 s; the agent writes 300 KB and exits.
    agent = (
        "(sleep 30 & echo $! > bg.pid); head -c 300000 /dev/zero | tr '\\0' y; echo; echo the end"
    )
    started = time.monotonic()
    code, log = run_writer(tmp_path, how, agent)
    assert code == 0
    assert time.monotonic() - started < 10
    text = log.read_text()
    assert text.endswith("\nthe end\n")
    assert text.count("y") == 300000
    os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)


def test_sigterm_goes_to_the_agent_not_the_writer(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    log = tmp_path / "agent.log"
    agent = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done"
    writer = start_writer(tmp_path, how, ["sh", "-c", agent], max_bytes=100000, head=100)
    wait_until(lambda: log.exists() and "ready" in log.read_text(), "the agent's ready", WAIT)
    os.killpg(writer.pid, signal.SIGTERM)  # as a cancel does
    assert writer.wait() == 7
    text = log.read_text()
    assert text.startswith("ready\n")
    assert text.endswith("got TERM\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_cancel_that_comes_before_the_agent_starts_reaches_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # The writer is signalled (as a cancel right after the spawn does) before it has
    # started the agent: the signal is held (here: already pending when run() begins)
    # and passed on, not dropped with the agent left running until the grace ends.
    release = tmp_path / "release"
    log, exit_file = tmp_path / "agent.log", tmp_path / "exit"
    agent = ["sh", "-c", f"echo started; while [ ! -e {release} ]; do sleep 0.02; done"]
    script = (
        "import os, signal, sys; from dispatcher.process import logpipe\n"
        f"signal.pthread_sigmask(signal.SIG_BLOCK, [{int(sig)}])\n"
        f"os.kill(os.getpid(), {int(sig)})\n"
        f"sys.exit(logpipe.run({agent!r}, dict(os.environ), {str(exit_file)!r},"
        f" {str(log)!r}, 1 << 20, 1, 4096))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        assert writer.wait(timeout=10) == 128 + sig
    finally:
        release.touch()
        writer.wait(timeout=WAIT)
    assert proc.signal_of(proc.read_exit_file(exit_file)) == sig


def test_a_program_that_cannot_start_is_127_with_a_line(
    tmp_path: Path, how: forks.ForkServer | None
) -> None:
    log = tmp_path / "agent.log"
    writer = start_writer(tmp_path, how, [str(tmp_path / "nope")], max_bytes=100000, head=100)
    assert writer.wait() == 127
    assert "cannot start the agent" in log.read_text()
    assert proc.read_exit_file(tmp_path / "exit") == 127


def test_session_in_head_reads_the_kept_head(tmp_path: Path, how: forks.ForkServer | None) -> None:
    line = '{"type":"thread.started","thread_id":"t-123"}'
    agent = f"echo '{line}'; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done"
    code, log = run_writer(tmp_path, how, agent, max_bytes=4096)
    assert code == 0
    assert "thread.started" not in log.read_text()  # rotated away
    assert output.session_in_head("codex", log) == "t-123"


@pytest.mark.parametrize("args", [[], ["e", "l", "1", "1", "1", "", "c", "x", "sh"]])
def test_bad_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert logpipe.main(args) == 2
    assert "usage: logpipe.py" in capsys.readouterr().err
