"""GitHub Copilot CLI (pinned in tests/conformance/clis) with no login and no network."""

from __future__ import annotations

from pathlib import Path

from tests.conformance.by_hand import run, workspace
from tests.conformance.conftest import Conformance, agent_bin

FLAG_ERRORS = ("unexpected argument", "invalid value", "error: unrecognized")


def test_with_no_login_the_job_fails_saying_so(conformance: Conformance) -> None:
    agent_bin("copilot")
    job = conformance.run("copilot")
    log = conformance.log(job["id"])
    assert job["state"] == "failed", log
    assert job["error"] == ("the agent reported an error: No authentication information found."), (
        log
    )
    assert not any(e in log for e in FLAG_ERRORS), log


def test_resume_gets_past_its_flags_to_the_session_lookup(tmp_path: Path) -> None:
    """``--resume=<id>`` parses, and copilot looks the session up (before any login)."""
    ran = run("copilot", workspace(tmp_path), resume="0cb916db-26aa-40f2-86b5-1ba81b225fd2")
    assert ran.argv[-1] == "--resume=0cb916db-26aa-40f2-86b5-1ba81b225fd2"
    assert ran.code == 1, ran.output
    assert (
        "Error: No session, task, or name matched '0cb916db-26aa-40f2-86b5-1ba81b225fd2'."
        in ran.output
    )
    assert not any(e in ran.output for e in FLAG_ERRORS), ran.output
