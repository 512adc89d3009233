"""A real job's agent is given the daemon's MCP server its own way (docs/mcp-agents.md):
a fake agent (tests/fakeagents/mcpprobe), run by the real daemon as each profile, shows
what it received; the token is in neither its argv, the job log, nor the worktree."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from dispatcher.jobs.tokens import JobTokens
from tests.daemon_fixture import Daemon
from tests.gitutil import init_repo

PROBE = str(Path(__file__).resolve().parents[1] / "fakeagents" / "mcpprobe")
AGENTS = {
    "claude": [PROBE, "claude", "-p"],
    "codex": [PROBE, "codex", "exec", "--sandbox", "danger-full-access", "-"],
    "qwen": [PROBE, "qwen"],
    "opencode": [PROBE, "opencode", "run"],
    "aider": [PROBE, "aider"],
}


def _daemon(daemon_factory: Callable[..., Daemon], **env: str) -> Daemon:
    return daemon_factory(DISPATCHER_AGENTS=json.dumps(AGENTS), **env).start()


def _run(d: Daemon, tmp_path: Path, agent: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run ``agent``'s job to its end: the job, what the probe printed, the job log."""
    repo = init_repo(tmp_path / f"repo-{agent}", files={"README.md": "hello\n"})
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, "Probe the MCP server.", agent=agent)["id"])
    log = str(d.api.get(f"/jobs/{job['id']}/log").text)
    probes = [json.loads(line) for line in log.splitlines() if line.startswith('{"type": "probe"')]
    assert len(probes) == 1, log
    return job, probes[0], log


def _token(d: Daemon, job_id: int) -> str:
    with closing(sqlite3.connect(d.state_dir / "dispatcher.db")) as db:
        (nonce,) = db.execute("SELECT spawn_nonce FROM job WHERE id = ?", (job_id,)).fetchone()
    return JobTokens(d.token).mint(job_id, nonce)


def _assert_nowhere(token: str, job: dict[str, Any], probe: dict[str, Any], log: str) -> None:
    assert token not in " ".join(probe["argv"])
    assert token not in log
    worktree = Path(job["worktree"])
    for path in worktree.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_each_agent_gets_the_server_its_own_way_and_the_token_stays_out_of_sight(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = _daemon(daemon_factory)
    url = f"{d.url}/mcp"
    for agent in ("claude", "codex", "qwen", "opencode"):
        job, probe, log = _run(d, tmp_path, agent)
        assert job["state"] == "succeeded", (agent, job, log)
        token = _token(d, job["id"])
        assert probe["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
        assert {"DISPATCHER_MCP_URL", "DISPATCHER_JOB_TOKEN"} <= set(probe["env"])
        assert probe["url"] == url
        assert f"mcp: the dispatcher server at {url}, by " in log
        _assert_nowhere(token, job, probe, log)
        jobdir = d.state_dir / "jobs" / str(job["id"])
        given = {p: f for p, f in probe["files"].items() if Path(p).parent == jobdir}
        given.pop(str(jobdir / "prompt.md"), None)
        if agent == "claude":
            path = str(jobdir / "mcp-claude.json")
            assert probe["argv"][-2:] == ["--mcp-config", path]
            assert given == {path: {"mode": "0o600", "holds_token": False, "names_var": True}}
        elif agent == "codex":
            assert probe["argv"][-4:] == [
                "-c", f'mcp_servers.dispatcher.url="{url}"',
                "-c", 'mcp_servers.dispatcher.bearer_token_env_var="DISPATCHER_JOB_TOKEN"',
            ]  # fmt: skip
            assert given == {}
        elif agent == "qwen":
            path = str(jobdir / "mcp-qwen.json")
            assert probe["argv"][-2:] == ["--mcp-config", path]
            # Qwen expands no variable there: the token is in this 0600 file, outside the tree.
            assert given == {path: {"mode": "0o600", "holds_token": True, "names_var": False}}
        else:
            config = json.loads(probe["opencode_config"])
            assert config["mcp"]["dispatcher"]["url"] == url
            assert given == {}


def test_an_agent_without_mcp_is_told_so_and_the_setting_turns_it_off(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = _daemon(daemon_factory)
    job, probe, log = _run(d, tmp_path, "aider")
    assert job["state"] == "succeeded", log
    assert "mcp: not given (its profile has no MCP support); its messages come in its prompt" in log
    assert probe["argv"] == [PROBE, "aider"]
    off = _daemon(daemon_factory, DISPATCHER_MCP_FOR_AGENTS="false")
    job, probe, log = _run(off, tmp_path / "off", "claude")
    assert "mcp: not given (turned off (DISPATCHER_MCP_FOR_AGENTS=false))" in log
    assert probe["argv"] == [PROBE, "claude", "-p"]
    # Turned off: no token is minted for the run, nor the server's URL given.
    assert not {"DISPATCHER_JOB_TOKEN", "DISPATCHER_MCP_URL"} & set(probe["env"]), probe["env"]
    assert not (off.state_dir / "jobs" / str(job["id"]) / "mcp-claude.json").exists()
