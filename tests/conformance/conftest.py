"""The conformance tier: the real agent CLIs, pinned (tests/conformance/clis), run by a real
daemon with each built-in profile's exact argv, in a real job worktree, with no credentials.

``scripts/install-agents`` installs them into ``.conformance/`` (``scripts/test`` runs it
first). A CLI that is not there fails its test saying so: nothing is skipped silently.

``conformance`` is one daemon per xdist worker whose PATH finds ``.conformance/bin`` first
and whose HOME is empty: no login, no key, no config of the agents' own. The machine has
no network beyond the package registries, so an agent that gets past its flags and its
auth check stops at the network.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import Daemon, _new_daemon
from tests.gitutil import init_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".conformance" / "bin"
PINS = Path(__file__).resolve().parent / "clis"

BOUND_S = 120.0
"""How long an agent may take to fail at auth or network: far longer than any of them
needs (most stop within seconds), far shorter than a hang."""

_SECRET = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|_AUTH)", re.IGNORECASE)
_AGENT_VARS = re.compile(
    r"^(ANTHROPIC|CLAUDE|OPENAI|CODEX|GEMINI|GOOGLE|GOOSE|AIDER|OPENROUTER|OPENCODE|QWEN|"
    r"DASHSCOPE|COPILOT|GH|GITHUB|AMP|CLINE|AWS|AZURE|VERTEX)_"
)


def agent_bin(program: str) -> Path:
    """The installed CLI ``program``; fails (not skips) when it is missing."""
    path = BIN / program
    if not path.exists():
        pytest.fail(
            f"{program} is not installed in {BIN}: run scripts/install-agents "
            f"(pins in {PINS.relative_to(ROOT)})",
            pytrace=False,
        )
    return path


def without_credentials(env: dict[str, str]) -> dict[str, str]:
    """``env`` without any credential or agent setting (``*_API_KEY``, ``GH_TOKEN``, ...)."""
    return {k: v for k, v in env.items() if not (_SECRET.search(k) or _AGENT_VARS.match(k))}


@dataclass
class Conformance:
    daemon: Daemon
    repo: str
    home: Path

    def run(
        self, agent: str, prompt: str = "Add a line to README.md.", **body: Any
    ) -> dict[str, Any]:
        """Submit a job for ``agent`` and wait, within :data:`BOUND_S`, for it to end."""
        job = self.daemon.submit(self.repo, prompt, agent=agent, **body)
        return self.daemon.wait(job["id"], timeout=BOUND_S + 30)

    def log(self, job_id: int) -> str:
        return str(self.daemon.api.get(f"/jobs/{job_id}/log").text)

    def followup(self, job: dict[str, Any], prompt: str = "Go on.") -> tuple[dict[str, Any], str]:
        """A follow-up of ``job``, waited for, and its log: it must have resumed ``job``'s
        session, and the agent must have reported that same session."""
        resp = self.daemon.api.post(f"/jobs/{job['id']}/followup", json={"prompt": prompt})
        assert resp.status_code == 201, resp.text
        second = self.daemon.wait(resp.json()["job"]["id"], timeout=BOUND_S + 30)
        log = self.log(second["id"])
        assert job["session_id"] and f"resuming agent session {job['session_id']}" in log
        assert second["session_id"] == job["session_id"]
        return second, log


@contextmanager
def conformance_daemon(root: Path, **env: str) -> Iterator[Conformance]:
    """A started daemon as described above, in ``root``; ``env``: more of its environment."""
    if not BIN.is_dir():
        pytest.fail(f"{BIN} is missing: run scripts/install-agents", pytrace=False)
    daemon = _new_daemon(
        root,
        PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        DISPATCHER_MAX_PARALLEL="8",
        DISPATCHER_MAX_PARALLEL_PER_REPO="8",
        DISPATCHER_DEFAULT_TIMEOUT_MINUTES=f"{BOUND_S / 60:g}",
    )
    daemon.env = {**without_credentials(daemon.env), **env}
    daemon.start()
    files = {
        "README.md": "hello\n",
        "src/app.py": "print('hi')\n",
        # Conventions, so that profiles with a system-prompt flag are run with it.
        "AGENTS.md": "# Conventions\n\nKeep every change small.\n",
    }
    repo = init_repo(root / "repo", files=files)
    name = daemon.add_repo(repo, "conformance")
    try:
        yield Conformance(daemon, name, root / "home")
    finally:
        try:
            daemon.cancel_active()
        finally:
            daemon.stop()
    shutil.rmtree(root / "state" / "worktrees", ignore_errors=True)


@pytest.fixture(scope="session")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    with conformance_daemon(tmp_path_factory.mktemp("conformance")) as c:
        yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A real CLI's start is slow (a Node.js bundle, a first-run migration): each test of
    this tier gets the bound plus the daemon's own time, not the suite's 60 s."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(BOUND_S + 60))
