"""dispatcher.process.logcap names a job log's head; the log writer (dispatcher.process.logpipe,
which may not import dispatcher) keeps its own copy of the name: they must agree."""

from __future__ import annotations

from pathlib import Path

from dispatcher.agents import output
from dispatcher.process import logcap, logpipe, proc


def test_the_log_writer_uses_the_names_logcap_gives(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    writer = logpipe.CappedLog(str(log), max_bytes=64, keep=2, head_bytes=32)
    for i in range(40):
        writer.write(f"line {i:04d}\n".encode())
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {log.name, logcap.head_path(log).name, "agent.log.1", "agent.log.2"}
    assert logcap.head_path(log).read_bytes() == b"line 0000\nline 0001\nline 0002\nli"


def test_spawn_and_the_session_reader_take_the_head_from_logcap(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    assert proc.head_path is logcap.head_path
    logcap.head_path(log).write_text('{"type":"thread.started","thread_id":"t-1"}\n')
    log.write_text("[dispatcher] log rotated: older output in agent.log.1\n")
    assert output.session_in_head("codex", log) == "t-1"
