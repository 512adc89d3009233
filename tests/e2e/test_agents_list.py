"""``GET /agents`` and ``dispatcher agents``: every profile, found on the daemon's PATH or not,
its version and what it can do; and a repo's ``agents:`` for manual jobs too."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.agents.catalog import BUILTIN_PROFILES
from tests.daemon_fixture import Daemon
from tests.gitutil import init_repo

LINT_BOT = """\
version: 1
agents:
  lint-bot: ["sh", "-c", "echo linted >> LINT.md"]
triggers:
  manual:
    on: manual
    prompt: lint
"""

SETTINGS_ONLY = """\
version: 1
agents:
  lint-bot: ["sh", "-c", "echo linted >> LINT.md"]
"""
"""A file of repo settings and no trigger: valid, for jobs started by hand."""


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _daemon(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> tuple[Daemon, Path]:
    """A daemon whose PATH has a fake ``claude`` (it counts its --version calls) and the
    system's programs, and none of the other agents."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "version-calls"
    _script(
        bin_dir / "claude",
        f'echo called >> "{calls}"\necho "9.9.9 (Claude Code) key=${{ANTHROPIC_API_KEY:-none}}"',
    )
    _script(bin_dir / "gemini", f'echo gemini >> "{calls}"\necho "no such option" >&2\nexit 3')
    _script(bin_dir / "my-agent", f'echo my-agent >> "{calls}"')
    path = os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    agents = '{"mine": "my-agent --go --api-key sk-not-shown"}'
    d = daemon_factory(PATH=path, DISPATCHER_AGENTS=agents, ANTHROPIC_API_KEY="sk-daemons")
    return d.start(), calls


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_agents_lists_every_profile_with_where_it_is_found_and_its_version(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d, calls = _daemon(daemon_factory, tmp_path)
    resp = d.api.get("/agents")
    assert resp.status_code == 200, resp.text
    rows = resp.json()
    assert [r["name"] for r in rows] == [*BUILTIN_PROFILES, "mine"]
    agents = _by_name(rows)
    claude = agents["claude"]
    assert claude["path"] == str(tmp_path / "bin" / "claude")
    assert claude["version"] == "9.9.9 (Claude Code) key=none"  # no credential reaches it
    assert claude["problem"] is None and claude["source"] == "builtin"
    assert claude["can_resume"] is True and claude["system_prompt"] is True
    assert claude["structured"] is True
    codex = agents["codex"]
    assert codex["path"] is None and codex["version"] is None
    assert codex["problem"] == "'codex' not found on the daemon's PATH"
    assert agents["gemini"]["problem"] == "gemini --version exited 3: no such option"
    mine = agents["mine"]
    assert mine["source"] == "settings"
    assert mine["argv"] == ["my-agent", "--go", "--api-key", "***"]
    # A configured program is found, never run (a listing would run it unboxed).
    assert mine["path"] == str(tmp_path / "bin" / "my-agent")
    assert mine["version"] is None and mine["problem"] is None
    # A version is asked once per program file; a failed answer is asked again.
    assert d.api.get("/agents").status_code == 200
    assert sorted(calls.read_text().splitlines()) == ["called", "gemini", "gemini"]


def test_agents_with_a_repo_shows_its_trigger_files_agents(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d, _ = _daemon(daemon_factory, tmp_path)
    repo = init_repo(
        tmp_path / "r", files={"README.md": "hi\n", ".dispatcher/triggers.yml": LINT_BOT}
    )
    name = d.add_repo(repo)
    assert "lint-bot" not in _by_name(d.api.get("/agents").json())
    bot = _by_name(d.api.get("/agents", params={"repo": name}).json())["lint-bot"]
    assert bot["source"] == "repo"
    assert bot["path"] is not None and Path(bot["path"]).name == "sh", bot
    missing = d.api.get("/agents", params={"repo": "no-such-repo"})
    assert missing.status_code == 404, missing.text
    assert "no-such-repo" in missing.json()["error"]["message"]


def test_a_manual_job_runs_an_agent_its_repos_trigger_file_defines(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """`agents:` of a repo's trigger file applied to trigger jobs only: `dispatcher run
    --agent lint-bot` was refused as an unknown agent. The file holds no trigger: that
    was refused too ("triggers: needs at least one trigger")."""
    d, _ = _daemon(daemon_factory, tmp_path)
    files = {"README.md": "hi\n", ".dispatcher/triggers.yml": SETTINGS_ONLY}
    name = d.add_repo(init_repo(tmp_path / "r", files=files))
    shown = d.api.get(f"/repos/{name}").json()
    assert shown["triggers_error"] is None and shown["triggers"] == [], shown
    job = d.submit(name, "lint it", agent="lint-bot")
    done = d.wait(job["id"])
    assert done["state"] == "succeeded", done
    diff = d.api.get(f"/jobs/{job['id']}/diff").json()
    assert "LINT.md" in json.dumps(diff)


def test_the_cli_prints_one_line_per_agent(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d, _ = _daemon(daemon_factory, tmp_path)
    out = d.cli("agents").stdout.splitlines()
    assert out[0].split() == ["AGENT", "VERSION", "RESUME", "COST", "SYSTEM", "NOTES"]
    lines = {line.split()[0]: line for line in out[1:]}
    assert set(lines) == {*BUILTIN_PROFILES, "mine"}
    assert lines["claude"].split()[:6] == ["claude", "9.9.9", "(Claude", "Code)", "key=none", "yes"]
    assert (
        "not found" in lines["codex"] and "'codex' not found on the daemon's PATH" in lines["codex"]
    )
    assert lines["mine"].rstrip().endswith("settings")
    rows = json.loads(d.cli("agents", "--json").stdout)
    assert [r["name"] for r in rows] == [*BUILTIN_PROFILES, "mine"]
    bad = d.cli("agents", "--repo", "nope", check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
