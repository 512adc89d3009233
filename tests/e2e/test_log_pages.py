"""GET /jobs/{id}/log answers bounded pages, against the real daemon and a chatty agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_fixture import Daemon
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
MIB = 1024 * 1024
# 40 bytes a line, with two- and three-byte characters, so page ends fall inside them.
LINE = "héllo wörld ✓ 0123456789 ünïcode ✓✓✓"
LINES = 130_000  # about 5.3 MB


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


def _chatty_job(daemon: Daemon, repo: Path, agent: Agent) -> tuple[int, bytes]:
    """A finished job whose log holds several MB; returns its id and agent.log's bytes."""
    name = daemon.add_repo(repo)
    script = agent("chatty.sh", f"yes '{LINE}' | head -n {LINES}\n")
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    assert job["state"] == "succeeded", job
    log = daemon.state_dir / "jobs" / str(job["id"]) / "agent.log"
    wait_until(  # the daemon's last note follows the state change
        lambda: log.read_bytes().endswith(f"job {job['id']} succeeded\n".encode()),
        "the job's last note to reach its log",
        timeout=10,
        interval=0.05,
    )
    data = log.read_bytes()
    assert len(data) > 5 * MIB
    return job["id"], data


@pytest.mark.timeout(120)
def test_log_is_answered_in_bounded_pages_that_concatenate_to_the_file(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    job_id, data = _chatty_job(daemon, repo, agent)
    url = f"/jobs/{job_id}/log"

    first = daemon.api.get(url)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    assert 0 < len(first.content) <= MIB  # bounded by default (it was the whole log)
    assert first.headers["X-Log-Start"] == "0"
    assert int(first.headers["X-Log-Next-Offset"]) == len(first.content)
    assert int(first.headers["X-Log-Size"]) == len(data)

    pages, offset = [], 0
    while offset < len(data):
        resp = daemon.api.get(url, params={"offset": offset, "limit": 1_000_003})
        assert resp.status_code == 200, resp.text
        assert int(resp.headers["X-Log-Start"]) == offset
        assert 0 < len(resp.content) <= 1_000_003
        offset = int(resp.headers["X-Log-Next-Offset"])
        assert offset == len(data) or not _is_continuation(data[offset])  # never mid-character
        resp.content.decode("utf-8")  # each page is whole characters
        pages.append(resp.content)
    assert b"".join(pages) == data
    assert len(pages) >= len(data) // 1_000_003

    at_end = daemon.api.get(url, params={"offset": len(data)})
    assert (at_end.content, at_end.headers["X-Log-Next-Offset"]) == (b"", str(len(data)))
    # Past the end: the log was rotated since (offsets are into the current agent.log),
    # so the page starts again at 0 and says so.
    past = daemon.api.get(url, params={"offset": len(data) + 10, "limit": 100})
    assert past.headers["X-Log-Start"] == "0"
    assert past.content == data[:100]

    tail = daemon.api.get(url, params={"tail": 1001})
    start = int(tail.headers["X-Log-Start"])
    assert len(data) - 1001 <= start <= len(data) - 1001 + 3
    assert not _is_continuation(data[start])
    assert tail.content == data[start:]
    assert tail.headers["X-Log-Next-Offset"] == str(len(data))
    capped = daemon.api.get(url, params={"tail": 2 * MIB, "limit": 1000})
    assert capped.content == data[len(data) - 2 * MIB :][:1000]


def test_bad_log_page_parameters_get_one_line_json_errors(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[agent("hi.sh", "echo hi\n")])["id"])
    url = f"/jobs/{job['id']}/log"
    cases = {
        "offset": {"offset": "-1"},
        "limit": {"limit": str(8 * MIB + 1)},
        "limit ": {"limit": "0"},
        "offset ": {"offset": "abc"},
        "tail": {"tail": "-5"},
        "tail ": {"tail": str(8 * MIB + 1)},
        "offset or tail": {"offset": "0", "tail": "10"},
    }
    for word, params in cases.items():
        resp = daemon.api.get(url, params=params)
        assert resp.status_code == 422, (params, resp.text)
        assert "\n" not in resp.text
        error = json.loads(resp.text)["error"]
        assert error["code"] == "invalid_input"
        assert word.strip() in error["message"], (params, error)
    follow = daemon.api.get(url, params={"follow": "true", "offset": "0", "tail": "10"})
    assert follow.status_code == 422
    assert daemon.api.get("/jobs/999999/log", params={"tail": "10"}).status_code == 404


@pytest.mark.timeout(120)
def test_cli_logs_prints_the_tail_by_default_and_all_on_request(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    job_id, data = _chatty_job(daemon, repo, agent)
    text = data.decode("utf-8")

    shown = daemon.cli("logs", str(job_id))
    assert 0 < len(shown.stdout.encode()) <= MIB
    assert text.endswith(shown.stdout)
    assert shown.stdout.endswith(f"job {job_id} succeeded\n")
    assert f"dispatcher logs {job_id} --all" in shown.stderr

    small = daemon.cli("logs", str(job_id), "--tail", "100")
    assert 97 <= len(small.stdout.encode()) <= 100
    assert text.endswith(small.stdout)

    everything = daemon.cli("logs", str(job_id), "--all")
    assert everything.stdout == text
    assert everything.stderr == ""

    followed = daemon.cli("logs", str(job_id), "-f", "--tail", "5000")
    assert text.endswith(followed.stdout)
    assert 4997 <= len(followed.stdout.encode()) <= 5000

    bad = daemon.cli("logs", str(job_id), "--tail", "0", check=False)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
