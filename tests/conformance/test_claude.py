"""Claude Code 2.1.332, the real CLI, run by the daemon with the built-in profile.

As root (this machine), bypassPermissions makes Claude Code exit at once
("--dangerously-skip-permissions cannot be used with root/sudo privileges"): the job
fails at start with the profile's ``root_refusal`` and leaves no worktree. With the
user's opt-in (``IS_SANDBOX=1`` in the daemon's environment) it runs, gets past every
flag of the profile (resume, --append-system-prompt, --max-budget-usd) and stops at auth:
"Not logged in · Please run /login", a stream-json ``result`` with ``is_error``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.agents.builtin.claude import PROFILE, ROOT_OPT_IN
from tests.conformance.conftest import Conformance, agent_bin, conformance_daemon

NOT_LOGGED_IN = "Not logged in · Please run /login"
FLAG_ERRORS = ("unknown option", "requires --verbose", "error: option")
AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def opted_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    """A daemon the user started with Claude Code's own opt-in to run as root."""
    name, _, value = ROOT_OPT_IN.partition("=")
    with conformance_daemon(tmp_path_factory.mktemp("claude-opted-in"), **{name: value}) as c:
        yield c


def assert_no_flag_error(log: str) -> None:
    for text in FLAG_ERRORS:
        assert text not in log, log


def test_as_root_the_job_fails_at_start_with_what_to_do(conformance: Conformance) -> None:
    agent_bin("claude")
    job = conformance.run("claude")
    assert job["state"] == "failed"
    if not AS_ROOT:  # a normal user: no refusal, it stops at auth
        assert NOT_LOGGED_IN in job["error"]
        return
    assert job["error"] == PROFILE.root_refusal
    assert job["worktree"] is None
    assert not any(Path(conformance.daemon.state_dir, "worktrees").glob(f"{job['id']}-*"))
    log = conformance.log(job["id"])
    assert f"failed before the agent started: {PROFILE.root_refusal}" in log
    assert "agent claude:" not in log  # it was never started


def test_opted_in_it_runs_every_flag_and_stops_at_auth(opted_in: Conformance) -> None:
    agent_bin("claude")
    job = opted_in.run("claude", max_cost_usd=0.5)
    assert job["state"] == "failed"
    assert job["error"] == f"the agent reported an error: {NOT_LOGGED_IN}"
    log = opted_in.log(job["id"])
    assert_no_flag_error(log)
    if AS_ROOT:
        assert f"running as root: {ROOT_OPT_IN} is set" in log
    assert "--append-system-prompt" in log and "'--max-budget-usd', '0.5'" in log
    assert '"apiKeySource":"none"' in log

    second, log = opted_in.followup(job)
    assert f"'--resume', '{job['session_id']}'" in log
    assert_no_flag_error(log)
    assert second["error"] == f"the agent reported an error: {NOT_LOGGED_IN}"
