"""Qwen Code (pinned in clis/package.json), real, with no credentials and no network."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conformance import by_hand
from tests.conformance.conftest import Conformance, agent_bin

NO_AUTH = "No auth type is selected. Please configure an auth type"
FLAG_ERROR = "Unknown argument"
SYSTEM_PROMPT = "Keep every change small."


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
    ws = by_hand.workspace(tmp_path)
    resume = "3e52ea0e-e41b-4586-b797-b868130e9458"
    done = by_hand.run("qwen", ws, resume=resume, system=SYSTEM_PROMPT)
    assert "--append-system-prompt" in done.argv
    assert done.code == 1, done.stderr
    assert "No saved session found with ID 3e52ea0e-" in done.stderr
    assert FLAG_ERROR not in done.stderr
    report = done.report()
    assert report.is_error and report.error is not None
    assert report.error.startswith("No saved session found")


def test_system_prompt_flag_gets_to_the_auth_check(tmp_path: Path) -> None:
    """Without resume, the same flags reach qwen's auth check: a JSON error result."""
    agent_bin("qwen")
    ws = by_hand.workspace(tmp_path)
    done = by_hand.run("qwen", ws, system=SYSTEM_PROMPT)
    assert done.code == 1, done.stderr
    report = done.report()
    assert report.is_error and report.error is not None and report.error.startswith(NO_AUTH)
