"""Capping a live agent log: copy aside, truncate in place, the writer keeps appending.

Files on disk and real writer processes whose output descriptor is opened
``O_APPEND``, as :func:`dispatcher.proc.spawn` opens the agent's log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher import logcap, proc

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
ROTATED = b"[dispatcher] log rotated: older output in agent.log.1\n"
LINE = re.compile(rb"line (\d+)")


def poll(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Until ``condition()``; the deadline is reached only on failure (generous for CI)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(f"line {i}\n".encode() for i in range(start, start + n))


def rotated_files(log: Path) -> list[str]:
    return sorted(p.name for p in log.parent.iterdir() if p.name != log.name)


def numbers(data: bytes) -> list[int]:
    """The numbers of the whole ``line N`` lines in ``data`` (a cut-off last line ignored)."""
    complete = data[: data.rfind(b"\n") + 1]
    return [int(m.group(1)) for m in LINE.finditer(complete)]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "job" / "agent.log"


# ---------------------------------------------------------------- files at rest


def test_a_missing_log_is_left_alone(log: Path) -> None:
    log.parent.mkdir()
    assert logcap.cap(log, max_bytes=10) is False
    assert rotated_files(log) == []
    assert not log.exists()


@pytest.mark.parametrize("size", [0, 99, 100])
def test_a_log_within_the_limit_is_untouched(log: Path, size: int) -> None:
    log.parent.mkdir()
    log.write_bytes(b"x" * size)
    before = log.stat()
    assert logcap.cap(log, max_bytes=100) is False
    assert log.read_bytes() == b"x" * size
    assert log.stat().st_mtime_ns == before.st_mtime_ns
    assert rotated_files(log) == []


def test_rotation_keeps_the_newest_max_bytes_from_a_line_start(log: Path) -> None:
    log.parent.mkdir()
    content = lines(100)  # "line 0\n" .. "line 99\n"
    log.write_bytes(content)

    assert logcap.cap(log, max_bytes=50) is True

    assert log.read_bytes() == ROTATED
    # The newest 50 bytes start inside "line 93\n"; the copy starts at the next line.
    kept = lines(6, start=94)
    assert len(kept) < 50 < len(kept) + len(b"line 93\n")
    dropped = len(content) - len(kept)
    assert (log.parent / "agent.log.1").read_bytes() == (
        f"[dispatcher] {dropped} bytes of earlier output dropped\n".encode() + kept
    )
    assert rotated_files(log) == ["agent.log.1"]


def test_rotation_cut_exactly_at_a_line_start_loses_no_line(log: Path) -> None:
    log.parent.mkdir()
    log.write_bytes(b"abcd\n" * 20)
    assert logcap.cap(log, max_bytes=50) is True
    assert (log.parent / "agent.log.1").read_bytes() == (
        b"[dispatcher] 50 bytes of earlier output dropped\n" + b"abcd\n" * 10
    )


def test_rotation_of_output_without_newlines_cuts_at_max_bytes(log: Path) -> None:
    log.parent.mkdir()
    log.write_bytes(b"x" * 100)
    assert logcap.cap(log, max_bytes=40) is True
    assert (log.parent / "agent.log.1").read_bytes() == (
        b"[dispatcher] 60 bytes of earlier output dropped\n" + b"x" * 40
    )


def test_keep_two_shifts_copies_and_drops_the_oldest(log: Path) -> None:
    log.parent.mkdir()
    for generation in (b"aaaa\n", b"bbbb\n", b"cccc\n"):
        with open(log, "ab") as fh:
            fh.write(generation * 10)
        assert logcap.cap(log, max_bytes=20, keep=2) is True
        assert log.read_bytes() == ROTATED
        assert len(rotated_files(log)) <= 2
    assert rotated_files(log) == ["agent.log.1", "agent.log.2"]
    # Each time the log held the last rotation's marker and 10 lines; the newest
    # 20 bytes are the last 4 lines.
    dropped = len(ROTATED) + 30
    assert (log.parent / "agent.log.1").read_bytes() == (
        f"[dispatcher] {dropped} bytes of earlier output dropped\n".encode() + b"cccc\n" * 4
    )
    assert (log.parent / "agent.log.2").read_bytes() == (
        f"[dispatcher] {dropped} bytes of earlier output dropped\n".encode() + b"bbbb\n" * 4
    )


def test_keep_zero_truncates_without_a_copy(log: Path) -> None:
    log.parent.mkdir()
    log.write_bytes(b"y" * 100)
    assert logcap.cap(log, max_bytes=10, keep=0) is True
    assert log.read_bytes() == b"[dispatcher] log rotated: 100 bytes of older output dropped\n"
    assert rotated_files(log) == []


def test_copies_beyond_keep_are_removed_and_other_files_left(log: Path) -> None:
    log.parent.mkdir()
    for name in ("agent.log.2", "agent.log.3", "agent.log.bak", "agent.log.2x", "other.log.5"):
        (log.parent / name).write_text("old\n")
    log.write_bytes(b"z\n" * 50)
    assert logcap.cap(log, max_bytes=10, keep=1) is True
    assert rotated_files(log) == ["agent.log.1", "agent.log.2x", "agent.log.bak", "other.log.5"]


@pytest.mark.parametrize(("max_bytes", "keep"), [(0, 1), (-5, 1), (10, -1)])
def test_bad_arguments_are_refused(log: Path, max_bytes: int, keep: int) -> None:
    with pytest.raises(ValueError, match=r"max_bytes|keep"):
        logcap.cap(log, max_bytes=max_bytes, keep=keep)


# ---------------------------------------------------------------- a live writer


@pytest.fixture
def fed_writer(log: Path) -> Iterator[Callable[[bytes], None]]:
    """A ``cat`` appending whatever the test feeds it to the log through an O_APPEND fd."""
    log.parent.mkdir()
    with open(log, "ab") as out:
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out)
    assert cat.stdin is not None
    stdin = cat.stdin

    def feed(data: bytes) -> None:
        target = log.stat().st_size + len(data)
        stdin.write(data)
        stdin.flush()
        poll(lambda: log.stat().st_size >= target, what="cat to write what it was fed")

    try:
        yield feed
    finally:
        stdin.close()
        cat.wait(timeout=10)


def test_the_writer_keeps_appending_to_the_live_file(
    log: Path, fed_writer: Callable[[bytes], None]
) -> None:
    fed_writer(lines(50))
    assert logcap.cap(log, max_bytes=100) is True
    assert log.read_bytes() == ROTATED

    fed_writer(b"after the rotation\n")
    # Appended at the new end: no hole of zero bytes where the old content was.
    assert log.read_bytes() == ROTATED + b"after the rotation\n"
    assert numbers((log.parent / "agent.log.1").read_bytes())[-1] == 49


def group_stopped(pgid: int) -> bool:
    """Every process of the group is stopped (state T), so none is inside a write."""
    states = []
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if fields and int(fields[2]) == pgid:
            states.append(fields[0])
    return bool(states) and all(state in "TtZ" for state in states)


def test_capping_a_running_agent(log: Path) -> None:
    max_bytes, keep = 256 * 1024, 2
    agent = proc.spawn(
        ["sh", "-c", 'i=0; while :; do echo "line $i"; i=$((i+1)); done'],
        cwd=log.parent.parent,
        env=ENV,
        stdin_path=None,
        log_path=log,
        exit_file=log.parent / "exit",
    )
    try:
        # While it writes flat out: every copy is a gapless run of newer output.
        rotations = 0
        newest_copied = -1
        deadline = time.monotonic() + 20
        while rotations < 5:
            assert time.monotonic() < deadline, f"only {rotations} rotations"
            if not logcap.cap(log, max_bytes=max_bytes, keep=keep):
                time.sleep(0.002)
                continue
            rotations += 1
            assert len(rotated_files(log)) == min(rotations, keep)
            first, body = (log.parent / "agent.log.1").read_bytes().split(b"\n", 1)
            assert first.startswith(b"[dispatcher] ")
            assert first.endswith(b" bytes of earlier output dropped")
            assert len(body) <= 2 * max_bytes  # even when the agent outpaces the copy
            copied = numbers(body)
            assert copied == list(range(copied[0], copied[-1] + 1))
            assert copied[0] > newest_copied
            newest_copied = copied[-1]
            # The live file holds only what came after the copy. (How much that
            # is depends on the agent's pace; see the frozen agent below.)
            assert min(numbers(log.read_bytes()), default=newest_copied + 1) > newest_copied
        older = numbers((log.parent / "agent.log.2").read_bytes())
        assert older[-1] < numbers((log.parent / "agent.log.1").read_bytes())[0]

        # Frozen between two writes: the cap is exact and loses nothing.
        poll(lambda: log.stat().st_size > max_bytes, what="the log to fill again")
        os.killpg(agent.pid, signal.SIGSTOP)
        try:
            poll(lambda: group_stopped(agent.pid), what="the agent to stop")
            last_written = numbers(log.read_bytes())[-1]
            assert logcap.cap(log, max_bytes=max_bytes, keep=keep) is True
            assert log.read_bytes() == ROTATED
            assert numbers((log.parent / "agent.log.1").read_bytes())[-1] == last_written
        finally:
            os.killpg(agent.pid, signal.SIGCONT)

        # Resumed, it appends to the live file right after the marker.
        poll(lambda: len(numbers(log.read_bytes())) > 1000, what="new lines in the live file")
        live = log.read_bytes()
        assert live.startswith(ROTATED + f"line {last_written + 1}\n".encode())
        assert b"\0" not in live
        assert numbers(live) == list(range(last_written + 1, last_written + 1 + len(numbers(live))))
        assert proc.is_alive(agent.pid, agent.start_time)
    finally:
        proc.kill_tree(agent.pid, agent.start_time, grace=1)
        proc.wait(agent, timeout=10)
