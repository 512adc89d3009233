"""Gemini CLI (pinned in clis/package.json), real, with no credentials and no network."""

from __future__ import annotations

import json
import os
import select
import signal
from pathlib import Path

from tests.conformance import by_hand
from tests.conformance.conftest import Conformance, agent_bin

NO_AUTH = "Please set an Auth method in your "
UNTRUSTED = "Gemini CLI is not running in a trusted directory"
FLAG_ERROR = "Unknown argument"
FAKE_KEY = {"GEMINI_API_KEY": "not-a-real-key"}
"""Not a credential: it only gets gemini past its auth check, to the trust check and
the (unreachable) API."""


def test_job_fails_saying_no_auth_method(conformance: Conformance) -> None:
    agent_bin("gemini")
    job = conformance.run("gemini")
    assert job["state"] == "failed"
    assert "the agent reported an error: " + NO_AUTH in job["error"]
    assert "GEMINI_API_KEY" in job["error"]
    log = conformance.log(job["id"])
    assert FLAG_ERROR not in log and UNTRUSTED not in log


def test_with_a_key_skip_trust_gets_past_the_trust_check(tmp_path: Path) -> None:
    """Without --skip-trust a new worktree is untrusted and gemini exits 55 (once auth
    passes); with the profile's argv it starts the session (``init``) and goes on to the
    unreachable API, where it retries for minutes: the test stops it there."""
    agent_bin("gemini")
    ws = by_hand.workspace(tmp_path)
    untrusted = [a for a in by_hand.argv("gemini", ws) if a != "--skip-trust"]
    refused = by_hand.run("gemini", ws, env=FAKE_KEY, args=untrusted)
    assert refused.code == 55, refused.stderr
    assert UNTRUSTED in refused.stderr

    assert first_event(ws)["type"] == "init"


def first_event(ws: by_hand.Workspace) -> dict[str, object]:
    """The first line gemini prints, with the fake key; then it is killed (it would go
    on to retry the unreachable API for minutes)."""
    child = by_hand.start("gemini", ws, env=FAKE_KEY)
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "gemini printed nothing in 60 s"
        event = json.loads(child.stdout.readline())
        assert isinstance(event, dict)
        return event
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()


def test_resume_argv_parses_and_looks_the_session_up(tmp_path: Path) -> None:
    """``--resume <uuid>`` is taken (no flag error) and looked up in this project's
    sessions under HOME: there are none, so gemini exits 42 saying so."""
    agent_bin("gemini")
    ws = by_hand.workspace(tmp_path)
    done = by_hand.run("gemini", ws, resume="c8dbf31e-8eea-40d4-8d33-84cb14a29af5")
    assert done.code == 42, done.stderr
    assert "Error resuming session: No previous sessions found" in done.stderr
    assert FLAG_ERROR not in done.stderr
