"""Codex CLI 0.171.0, the real CLI, run by the daemon with the built-in profile.

With no login and no network it starts its turn, retries (5 over WebSockets, 5 over
HTTPS: ``{"type":"error","message":"Reconnecting... n/5 (...)"}``) and ends with
``turn.failed`` "Connection failed: error sending request", exit 1, in about 30 s. Without
``--disable unbounded_connection_retries`` it would wait for the network forever.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.agents import output
from dispatcher.agents.builtin.codex import PROFILE
from dispatcher.agents.profiles import build_argv
from dispatcher.process import sandbox
from tests.conformance.conftest import (
    BIN,
    Conformance,
    agent_bin,
    conformance_daemon,
    without_credentials,
)
from tests.gitutil import init_repo

NO_NETWORK = "Connection failed: error sending request"
FLAG_ERRORS = ("unexpected argument", "error: invalid value", "Usage: codex")


def assert_no_flag_error(log: str) -> None:
    for text in FLAG_ERRORS:
        assert text not in log, log


ROOT_IN_BOX = os.geteuid() == 0 and sandbox.sandbox_for("auto", "bwrap").active
"""The daemon runs as root and boxes its agents: the built-in profile is refused at start
(Codex's own sandbox cannot start nested in the box as root), and an override with
``--sandbox danger-full-access`` is what runs."""

FULL_ACCESS = ["danger-full-access" if arg == "workspace-write" else arg for arg in PROFILE.argv]


@pytest.fixture(scope="module")
def runnable(
    conformance: Conformance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Conformance]:
    """A daemon whose codex profile runs here: the built-in one, or, as root in the box,
    the override the refusal names."""
    if not ROOT_IN_BOX:
        yield conformance
        return
    agents = json.dumps({"codex": FULL_ACCESS})
    with conformance_daemon(tmp_path_factory.mktemp("codex"), DISPATCHER_AGENTS=agents) as c:
        yield c


def test_as_root_in_the_daemons_box_the_builtin_profile_is_refused_at_start(
    conformance: Conformance,
) -> None:
    """Else every command codex runs fails (its bwrap cannot map its uid) and nothing in
    its output says so: the job could succeed having done nothing."""
    agent_bin("codex")
    job = conformance.run("codex")
    if ROOT_IN_BOX:
        assert job["state"] == "failed"
        assert job["error"] == PROFILE.root_refusal
        assert job["worktree"] is None or not Path(job["worktree"]).exists()
    else:
        assert job["error"] != PROFILE.root_refusal


def test_no_network_fails_the_job_with_the_reason_and_a_followup_resumes(
    runnable: Conformance,
) -> None:
    agent_bin("codex")
    conformance = runnable
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
