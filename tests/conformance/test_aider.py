"""aider 0.86 (pinned in tests/conformance/clis/aider.in), run by the daemon with no key.

The profile names its model (``--model sonnet``), so aider goes straight to the call and
litellm refuses it for want of ``ANTHROPIC_API_KEY``. aider itself exits 0 then: the job
fails only because the parser reads that line.
"""

from __future__ import annotations

import time

from tests.conformance.conftest import Conformance, agent_bin

NO_KEY = "litellm.AuthenticationError: Missing Anthropic API Key"


def test_no_key_fails_the_job_with_the_reason(conformance: Conformance) -> None:
    agent_bin("aider")
    started = time.monotonic()
    job = conformance.run("aider")
    elapsed = time.monotonic() - started
    log = conformance.log(job["id"])
    assert job["state"] == "failed", log
    assert NO_KEY in (job["error"] or ""), job["error"]
    assert job["error"].startswith("the agent reported an error: litellm.AuthenticationError")
    assert "\n" not in job["error"]
    assert "unrecognized arguments" not in log  # every flag of the profile parsed
    assert job["exit_code"] == 0, job  # aider itself says nothing went wrong
    # Past the git set-up (no identity: aider would write .git/config, read-only in the
    # sandbox) and never at the browser login.
    assert "Read-only file system" not in log
    assert "Uncaught" not in log
    assert "Waiting up to 5 minutes" not in log
    assert "Main model: claude-sonnet" in log
    assert "Git repo: " in log
    assert elapsed < 60, f"aider took {elapsed:.0f}s to fail"
