"""The log writer (dispatcher/process/logpipe.py) run as the wrapper runs it: a real process
with a real agent, its output capped as it is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.agents import output
from dispatcher.process import logpipe, proc
from tests.waiting import wait_until

WAIT = 30.0


def run_writer(
    tmp_path: Path, agent: str, *, max_bytes: int = 1 << 20, keep: int = 1, head: int = 4096
) -> tuple[int, Path]:
    """Run ``agent`` (a sh script) under the writer; (its exit status, the log path)."""
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-I", "-S", str(proc.LOGPIPE), str(tmp_path / "exit"), str(log),
            str(max_bytes), str(keep), str(head), "", "claim", "--", "sh", "-c", agent]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, timeout=WAIT, check=False)
    return done.returncode, log


def test_exit_status_reaches_the_exit_file_and_the_writers_own(tmp_path: Path) -> None:
    code, log = run_writer(tmp_path, "echo out; echo err >&2; exit 3")
    assert code == 3
    assert proc.read_exit_file(tmp_path / "exit") == 3
    assert log.read_text() == "out\nerr\n"


def test_an_agent_killed_by_a_signal_is_recorded_as_the_shell_would(tmp_path: Path) -> None:
    code, _ = run_writer(tmp_path, "kill -KILL $$")
    assert code == 128 + signal.SIGKILL
    assert proc.signal_of(proc.read_exit_file(tmp_path / "exit")) == signal.SIGKILL


def test_rotation_keeps_the_cap_the_names_and_the_head(tmp_path: Path) -> None:
    cap = 4096
    agent = (
        'echo "session-id-line"; i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done'
    )
    code, log = run_writer(tmp_path, agent, max_bytes=cap, keep=2, head=100)
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


def test_keep_zero_drops_older_output(tmp_path: Path) -> None:
    code, log = run_writer(
        tmp_path, "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done", max_bytes=4096,
        keep=0,
    )  # fmt: skip
    assert code == 0
    assert not (tmp_path / "agent.log.1").exists()
    assert log.read_text().startswith("[dispatcher] log rotated: older output dropped\n")
    assert log.stat().st_size <= 4096


def test_a_line_longer_than_the_cap_is_cut(tmp_path: Path) -> None:
    code, log = run_writer(tmp_path, "head -c 20000 /dev/zero | tr '\\0' x", max_bytes=4096)
    assert code == 0
    total = sum(p.stat().st_size for p in (log, tmp_path / "agent.log.1"))
    assert total <= 2 * 4096
    assert log.stat().st_size <= 4096


def test_the_last_output_is_drained_and_left_behind_writers_are_not_waited_for(
    tmp_path: Path,
) -> None:
    # A background process keeps the pipe open for 30 s; the agent writes 300 KB and exits.
    agent = (
        "(sleep 30 & echo $! > bg.pid); head -c 300000 /dev/zero | tr '\\0' y; echo; echo the end"
    )
    started = time.monotonic()
    code, log = run_writer(tmp_path, agent)
    assert code == 0
    assert time.monotonic() - started < 10
    text = log.read_text()
    assert text.endswith("\nthe end\n")
    assert text.count("y") == 300000
    os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)


def test_sigterm_goes_to_the_agent_not_the_writer(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-I", "-S", str(proc.LOGPIPE), str(tmp_path / "exit"), str(log),
            "100000", "1", "100", "", "claim", "--", "sh", "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done"]  # fmt: skip
    writer = subprocess.Popen(argv, cwd=tmp_path, start_new_session=True)
    wait_until(lambda: log.exists() and "ready" in log.read_text(), "the agent's ready", WAIT)
    os.killpg(writer.pid, signal.SIGTERM)  # as a cancel does
    assert writer.wait(WAIT) == 7
    text = log.read_text()
    assert text.startswith("ready\n")
    assert text.endswith("got TERM\n")


def test_a_program_that_cannot_start_is_127_with_a_line(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-I", "-S", str(proc.LOGPIPE), str(tmp_path / "exit"), str(log),
            "100000", "1", "100", "", "claim", "--", str(tmp_path / "nope")]  # fmt: skip
    assert subprocess.run(argv, timeout=WAIT, check=False).returncode == 127
    assert "cannot start the agent" in log.read_text()
    assert proc.read_exit_file(tmp_path / "exit") == 127


def test_session_in_head_reads_the_kept_head(tmp_path: Path) -> None:
    line = '{"type":"thread.started","thread_id":"t-123"}'
    agent = f"echo '{line}'; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done"
    code, log = run_writer(tmp_path, agent, max_bytes=4096)
    assert code == 0
    assert "thread.started" not in log.read_text()  # rotated away
    assert output.session_in_head("codex", log) == "t-123"


@pytest.mark.parametrize("args", [[], ["e", "l", "1", "1", "1", "", "c", "x", "sh"]])
def test_bad_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert logpipe.main(args) == 2
    assert "usage: logpipe.py" in capsys.readouterr().err
