"""Qwen Code (pinned in clis/package.json), real, with no credentials and no network."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.agents.builtin.qwen import PROFILE
from dispatcher.agents.output import parse_lines
from dispatcher.agents.profiles import build_argv
from tests.conformance import headless
from tests.conformance.conftest import Conformance, agent_bin

NO_AUTH = "No auth type is selected. Please configure an auth type"
FLAG_ERROR = "Unknown argument"
SYSTEM_PROMPT = "Keep every change small."


def argv(ws: headless.Workspace, resume_session: str | None = None) -> list[str]:
    """The profile's argv as the daemon builds it, with a system prompt."""
    prompt = ws.worktree / "prompt.md"
    return build_argv(
        PROFILE,
        prompt_file=prompt,
        workdir=ws.worktree,
        resume_session=resume_session,
        system_prompt=SYSTEM_PROMPT,
    )


def test_job_fails_saying_no_auth_type(conformance: Conformance) -> None:
    agent_bin("qwen")
    job = conformance.run("qwen")
    assert job["state"] == "failed"
    assert "the agent reported an error: " + NO_AUTH in job["error"]
    log = conformance.log(job["id"])
    assert FLAG_ERROR not in log
    result = next(json.loads(line) for line in log.splitlines() if '"type":"result"' in line)
    assert result["is_error"] is True


def test_resume_and_system_prompt_flags_parse(tmp_path: Path) -> None:
    """``--resume <id>`` and ``--append-system-prompt TEXT`` are taken (no flag error);
    the session is looked up under HOME, is not there, and qwen exits 1 saying so."""
    agent_bin("qwen")
    ws = headless.workspace(tmp_path)
    resume = argv(ws, resume_session="3e52ea0e-e41b-4586-b797-b868130e9458")
    assert "--append-system-prompt" in resume
    done = headless.run(resume, ws)
    assert done.returncode == 1, done.stderr
    assert "No saved session found with ID 3e52ea0e-" in done.stderr
    assert FLAG_ERROR not in done.stderr
    report = parse_lines("qwen", [*done.stdout.splitlines(), *done.stderr.splitlines()])
    assert report.is_error and report.error is not None
    assert report.error.startswith("No saved session found")


def test_system_prompt_flag_gets_to_the_auth_check(tmp_path: Path) -> None:
    """Without resume, the same flags reach qwen's auth check: a JSON error result."""
    agent_bin("qwen")
    ws = headless.workspace(tmp_path)
    done = headless.run(argv(ws), ws)
    assert done.returncode == 1, done.stderr
    report = parse_lines("qwen", [*done.stdout.splitlines(), *done.stderr.splitlines()])
    assert report.is_error and report.error is not None and report.error.startswith(NO_AUTH)
