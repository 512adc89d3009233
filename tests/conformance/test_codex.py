"""Codex CLI 0.171.0, the real CLI, run by the daemon with the built-in profile.

With no login and no network it starts its turn, retries (5 over WebSockets, 5 over
HTTPS: ``{"type":"error","message":"Reconnecting... n/5 (...)"}``) and ends with
``turn.failed`` "Connection failed: error sending request", exit 1, in about 30 s. Without
``--disable unbounded_connection_retries`` it would wait for the network forever.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from dispatcher.agents import output
from dispatcher.agents.builtin.codex import PROFILE
from dispatcher.agents.profiles import build_argv
from tests.conformance.conftest import BIN, Conformance, agent_bin, without_credentials
from tests.gitutil import init_repo

NO_NETWORK = "Connection failed: error sending request"
FLAG_ERRORS = ("unexpected argument", "error: invalid value", "Usage: codex")


def assert_no_flag_error(log: str) -> None:
    for text in FLAG_ERRORS:
        assert text not in log, log


def test_no_network_fails_the_job_with_the_reason_and_a_followup_resumes(
    conformance: Conformance,
) -> None:
    agent_bin("codex")
    started = time.monotonic()
    job = conformance.run("codex")
    assert time.monotonic() - started < 90
    assert job["state"] == "failed"
    assert job["error"] == f"the agent reported an error: {NO_NETWORK}"
    log = conformance.log(job["id"])
    assert_no_flag_error(log)
    assert "failed to lookup address information" in log  # the cause, in the retries
    assert "waiting for network" not in log

    second, log = conformance.followup(job)
    assert f"'resume', '{job['session_id']}', '-'" in log
    assert_no_flag_error(log)
    assert second["error"] == f"the agent reported an error: {NO_NETWORK}"


def test_resume_argv_parses_and_names_a_missing_session(tmp_path: Path) -> None:
    agent_bin("codex")
    repo = init_repo(tmp_path / "repo", files={"README.md": "hello\n"})
    home = tmp_path / "home"
    home.mkdir()
    prompt = tmp_path / "prompt.md"
    prompt.write_text("Go on.\n")
    session = "01a234fe-9c7d-7f72-a169-29e511ab16f9"
    argv = build_argv(
        PROFILE, prompt_file=prompt, workdir=repo, resume_session=session,
        summary_file=tmp_path / "summary.txt",
    )  # fmt: skip
    env = without_credentials(dict(os.environ))
    env.update(HOME=str(home), PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    with open(prompt, "rb") as stdin:
        done = subprocess.run(
            argv, cwd=repo, env=env, stdin=stdin, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).splitlines()
    assert_no_flag_error("\n".join(lines))
    report = output.parse_lines("codex", lines)
    assert report.is_error
    assert report.error is not None
    assert f"no rollout found for thread id {session}" in report.error
