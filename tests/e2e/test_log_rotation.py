"""Readers of a job's log across a rotation (the writer renames agent.log to
agent.log.1 and starts a new file): a follower misses none of it, and a paging
client with a stale file id starts the new file at 0. Real daemon, real agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.daemon_fixture import Daemon
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
MAX_LOG = 4096  # the smallest cap the daemon takes
# Phase 1 (lines 1-200, ~2.2 KB) waits for the gate; phase 2 (201-640, ~4.8 KB) then
# crosses the cap once, and the new file grows past where a reader of phase 1 stood.
FIRST, LAST = 200, 640


def _numbered_agent(agent: Agent, gate: Path) -> str:
    return agent(
        "numbered.sh",
        f"seq -f 'line %05g' 1 {FIRST}\n"
        f'while [ ! -e "{gate}" ]; do sleep 0.02; done\n'
        f"seq -f 'line %05g' {FIRST + 1} {LAST}\n",
    )


def _numbers(text: str) -> list[int]:
    return [int(line[5:]) for line in text.splitlines() if line.startswith("line ")]


def _start(
    daemon_factory: Callable[..., Daemon], repo: Path, agent: Agent, gate: Path
) -> tuple[Daemon, int]:
    d = daemon_factory(DISPATCHER_MAX_LOG_BYTES=str(MAX_LOG)).start()
    name = d.add_repo(repo)
    job = d.submit(name, command=[_numbered_agent(agent, gate)])
    return d, int(job["id"])


def test_a_follower_sees_every_line_once_across_a_rotation(
    daemon_factory: Callable[..., Daemon], repo: Path, agent: Agent, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    d, job_id = _start(daemon_factory, repo, agent, gate)
    text = ""
    with d.api.stream("GET", f"/jobs/{job_id}/log", params={"follow": "true"}) as resp:
        assert resp.status_code == 200
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "log":
                text += json.loads(line[5:])["text"]
                if f"line {FIRST:05d}\n" in text and not gate.exists():
                    gate.touch()  # the follower stands at the end of phase 1
            elif line.startswith("data:") and event == "end":
                break
    log = d.state_dir / "jobs" / str(job_id) / "agent.log"
    assert (log.parent / "agent.log.1").exists(), "the log was never rotated"
    assert "log rotated" in text
    assert _numbers(text) == list(range(1, LAST + 1))


def test_paging_with_a_stale_file_id_restarts_at_zero(
    daemon_factory: Callable[..., Daemon], repo: Path, agent: Agent, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    d, job_id = _start(daemon_factory, repo, agent, gate)
    url = f"/jobs/{job_id}/log"
    wait_until(lambda: f"line {FIRST:05d}\n" in d.api.get(url).text, "phase 1")
    first = d.api.get(url)
    file_id, offset = first.headers["X-Log-File-Id"], int(first.headers["X-Log-Next-Offset"])
    assert first.headers["X-Log-Restarted"] == "0"
    gate.touch()
    d.wait(job_id)
    log = d.state_dir / "jobs" / str(job_id) / "agent.log"
    assert (log.parent / "agent.log.1").exists(), "the log was never rotated"
    assert log.stat().st_size > offset  # the new file is past the old offset: size can't tell

    page = d.api.get(url, params={"offset": offset, "file_id": file_id})
    assert page.headers["X-Log-Start"] == "0"
    assert page.headers["X-Log-Restarted"] == "1"
    assert page.headers["X-Log-File-Id"] == str(log.stat().st_ino) != file_id
    assert page.content == log.read_bytes()
    # The current id goes on from the offset as asked.
    same = d.api.get(url, params={"offset": 5, "file_id": page.headers["X-Log-File-Id"]})
    assert same.headers["X-Log-Start"] == "5" and same.headers["X-Log-Restarted"] == "0"
