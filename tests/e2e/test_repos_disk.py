"""``GET /repos``' worktree bytes end to end: measured in the background, shown with the
time they were measured, and measured again when a job adds files or its tree goes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.daemon_fixture import Daemon
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
BIG = 300_000  # bytes the agent writes


def shown(d: Daemon, name: str) -> dict[str, Any]:
    resp = d.api.get(f"/repos/{name}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def measured(d: Daemon, name: str, ok: Callable[[int], bool], what: str) -> dict[str, Any]:
    """The repo once its figure satisfies ``ok``."""
    return wait_until(
        lambda: (
            (r := shown(d, name))["worktrees_bytes"] is not None and ok(r["worktrees_bytes"]) and r
        ),
        what,
        timeout=30,
        max_interval=0.25,
    )


def test_the_figure_follows_the_jobs_trees(daemon: Daemon, repo: Path, agent: Agent) -> None:
    name = daemon.add_repo(repo)
    empty = measured(daemon, name, lambda size: size == 0, "the new repo measured: no trees")
    assert empty["worktrees_measured_at"] is not None
    writer = agent("big.sh", f"head -c {BIG} /dev/zero > big.bin\n")
    job = daemon.wait(daemon.submit(name, command=[writer])["id"])
    assert job["state"] == "succeeded" and job["worktree"]
    full = measured(daemon, name, lambda size: size >= BIG, "the ended job's tree measured")
    assert datetime.fromisoformat(full["worktrees_measured_at"]) >= datetime.fromisoformat(
        empty["worktrees_measured_at"]
    )
    listed = {r["name"]: r for r in daemon.api.get("/repos").json()}
    assert listed[name]["worktrees_bytes"] == full["worktrees_bytes"]  # the same cached figure
    shown_text = daemon.cli("repo", "show", name).stdout
    assert "MiB on disk (measured " in shown_text

    daemon.cli("discard", str(job["id"]))
    assert not Path(job["worktree"]).exists()
    measured(daemon, name, lambda size: size == 0, "the discarded job's tree dropped")
