"""Cline CLI (pinned in tests/conformance/clis) with no provider key and no network.

Cline's default provider needs no key to start: it tries the API, retries for about a
minute and then fails at the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conformance.conftest import Conformance, agent_bin

OFFLINE = "the agent reported an error: Cannot connect to API: Was there a typo in the url or port?"


def _hub_daemons() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--cline-hub-daemon" in cmdline:
            found.append(os.fsdecode(b" ".join(cmdline)))
    return found


def test_with_no_network_the_job_fails_saying_so(conformance: Conformance) -> None:
    agent_bin("cline")
    before = _hub_daemons()
    job = conformance.run("cline")
    log = conformance.log(job["id"])
    assert job["state"] == "failed", log
    assert job["error"].startswith(OFFLINE), log
    assert "JSON output mode requires a prompt" not in log, log
    assert "unknown option" not in log, log
    # CLINE_SESSION_BACKEND_MODE=local: no hub daemon was left behind by the job.
    assert [d for d in _hub_daemons() if d not in before] == []
