"""goose 1.37.0, the real CLI: no provider fails the job at once with goose's reason; a
local stub model shows the profile's argv, its resume and its system prompt at work."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conformance.by_hand import FOLLOW_UP, check_resume, run, workspace
from tests.conformance.conftest import Conformance
from tests.conformance.stubmodel import ANSWER, stub_model

NO_PROVIDER = "No provider configured. Run 'goose configure' first."
FLAG_ERRORS = ("unexpected argument", "Usage: goose", "can only be used with")


def test_no_provider_fails_at_once_with_the_reason(conformance: Conformance) -> None:
    started = time.monotonic()
    job = conformance.run("goose")
    assert job["state"] == "failed"
    assert job["error"] == f"the agent reported an error: {NO_PROVIDER}"
    assert time.monotonic() - started < 60
    log = conformance.log(job["id"])
    assert not any(text in log for text in FLAG_ERRORS), log


def _stub_env(url: str) -> dict[str, str]:
    return {
        "GOOSE_PROVIDER": "openai",
        "GOOSE_MODEL": "stub-model",
        "OPENAI_HOST": url,
        "OPENAI_API_KEY": "sk-stub",  # the stub takes any key
    }


def test_runs_resumes_and_takes_the_system_prompt(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    with stub_model() as stub:
        first = run("goose", ws, env=_stub_env(stub.url), system="MARKER-S1")
        report = first.report()
        assert (first.code, report.is_error, report.summary) == (0, False, ANSWER), first
        assert (report.model, report.input_tokens, report.output_tokens) == ("stub-model", 1200, 15)
        assert report.session_id
        assert f"{report.session_id} · {ws.worktree}" in first.output  # it works in the worktree
        assert stub.sent("MARKER-S1")  # --system reached the model
        assert len(stub.requests) == 1  # no extra call to name the session
        again = check_resume("goose", ws, report.session_id, _stub_env(stub.url))
        assert "resuming" in again.output
        assert stub.sent("Add a line to README.md.") and stub.sent(FOLLOW_UP)
        assert stub.requests[-1]["messages"][1]["content"].startswith("Add a line")


def test_resume_of_an_unknown_session_fails_with_the_reason(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    with stub_model() as stub:
        ran = run("goose", ws, env=_stub_env(stub.url), resume="20991231_9")
    report = ran.report()
    assert ran.code == 1
    assert report.error == "Cannot resume session 20991231_9 - no such session exists"


def test_no_key_fails_with_the_missing_variable(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    env = {"GOOSE_PROVIDER": "anthropic", "GOOSE_MODEL": "claude-sonnet-4-5"}
    ran = run("goose", ws, env=env, system="S")
    assert ran.code == 1
    assert ran.report().error == "Error Configuration value not found: ANTHROPIC_API_KEY."
