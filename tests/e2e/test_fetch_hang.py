"""End to end: a `fetch: true` remote that hangs holds up only its own repo (docs/forge.md).

The remote is a local TCP server speaking nothing: it accepts git:// connections and
never answers, so each fetch runs until ``DISPATCHER_FETCH_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import Daemon
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

MANUAL_YML = """\
version: 1
agents: {bot: BOT}
triggers:
  go:
    on: {manual: {}}
    agent: bot
    prompt: "go"
"""


class SilentServer:
    """Accepts TCP connections, counts them, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_hanging_remote_stalls_neither_other_repos_nor_costs_a_fetch_per_event(
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
    agent: Callable[[str, str], str],
    silent: SilentServer,
) -> None:
    d = daemon_factory(
        DISPATCHER_FETCH_TIMEOUT_SECONDS="8", DISPATCHER_FETCH_COALESCE_SECONDS="2"
    ).start()
    yml = MANUAL_YML.replace("BOT", agent("bot.sh", "echo done\n"))
    hang = init_repo(tmp_path / "hang", files={".dispatcher/triggers.yml": yml})
    git(hang, "remote", "add", "origin", f"git://127.0.0.1:{silent.port}/x.git")
    other = init_repo(tmp_path / "other", files={".dispatcher/triggers.yml": yml})
    hang_name, other_name = d.add_repo(hang), d.add_repo(other)
    assert d.api.patch(f"/repos/{hang_name}", json={"fetch": True}).status_code == 200

    answers: list[dict[str, Any]] = []

    def post(n: int) -> None:
        body = {"repo": hang_name, "kind": "manual", "dedup_key": f"hang-{n}"}
        answers.append(d.api.post("/events", json=body, timeout=60).json())

    posts = [threading.Thread(target=post, args=(n,)) for n in range(3)]
    for t in posts:
        t.start()
    wait_until(lambda: silent.accepted >= 1, "the hanging fetch to start", timeout=20)
    # The hanging repo's fetch is in flight: another repo's event still makes its job now.
    made = d.api.post(
        "/events", json={"repo": other_name, "kind": "manual", "dedup_key": "o"}, timeout=60
    ).json()
    assert len(made["jobs"]) == 1, made
    assert answers == [], "the other repo's event waited for the hanging fetch"
    for t in posts:
        t.join(60)
    assert len(answers) == 3 and all(len(a["jobs"]) == 1 for a in answers), answers
    assert silent.accepted == 1  # three events that came together: one fetch
    for a in answers:
        job = d.wait(a["jobs"][0], timeout=60)
        assert job["state"] == "succeeded", job
