"""opencode 1.18.33, the real CLI: with no credentials the default (OpenCode Zen) model is
unreachable and the job fails with opencode's reason; a local stub model shows the
profile's argv, its cost report and its resume at work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.by_hand import FOLLOW_UP, check_resume, run, workspace
from tests.conformance.conftest import Conformance
from tests.conformance.stubmodel import ANSWER, stub_model

NO_NETWORK = "Cannot connect to API: Unable to connect. Is the computer able to access the url?"


def test_no_credentials_fails_with_the_reason(conformance: Conformance) -> None:
    job = conformance.run("opencode")
    assert job["state"] == "failed"
    assert job["error"] == f"the agent reported an error: {NO_NETWORK}"
    log = conformance.log(job["id"])
    assert "Unknown argument" not in log and "Not enough arguments" not in log, log
    assert job["session_id"] and job["session_id"].startswith("ses_")


def _stub_env(url: str) -> dict[str, str]:
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "options": {"baseURL": f"{url}/v1", "apiKey": "stub"},
        "models": {"stub-model": {"cost": {"input": 3, "output": 15}}},
    }
    config = {"provider": {"stub": provider}, "model": "stub/stub-model"}
    return {"OPENCODE_CONFIG_CONTENT": json.dumps(config | {"small_model": "stub/stub-model"})}


def test_runs_reports_cost_and_resumes(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    with stub_model() as stub:
        first = run("opencode", ws, env=_stub_env(stub.url))
        report = first.report()
        assert (first.code, report.is_error, report.summary) == (0, False, ANSWER), first
        assert report.cost_usd == pytest.approx((1200 * 3 + 15 * 15) / 1e6)
        assert (report.input_tokens, report.output_tokens, report.turns) == (1200, 15, 1)
        assert report.session_id and report.session_id.startswith("ses_")
        assert stub.sent("Keep changes small.")  # it read AGENTS.md itself
        # in the worktree, though PWD (inherited, as from the daemon) names another place
        assert stub.sent(f"Working directory: {ws.worktree}")
        check_resume("opencode", ws, report.session_id, _stub_env(stub.url))
        assert stub.sent(FOLLOW_UP)
        last = json.dumps(stub.requests[-1])
        assert "Add a line to README.md." in last and FOLLOW_UP in last


def test_resume_of_an_unknown_session_fails_with_the_reason(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    with stub_model() as stub:
        ran = run("opencode", ws, env=_stub_env(stub.url), resume="ses_nonesuch")
    assert ran.code == 1
    assert ran.report().error == "Session not found"
