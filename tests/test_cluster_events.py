"""Events across nodes (docs/cluster.md, step 7): every node with a clone of a repo runs
its schedules, and the event's dedup key, unique in the shared database, makes a tick
one event and one job for the whole cluster; on both databases, two nodes' real
services and their real schedulers, driven at one chosen time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher.events.schedules import Schedules
from tests.clusterutil import Node, _clone, _hub
from tests.gitutil import commit_file, git

pytestmark = pytest.mark.timeout(120)

TRIGGERS = """\
version: 1
agents: {bot: "sh -c 'echo tick > TICK'"}
triggers:
  every-minute:
    on: {schedule: [{cron: "* * * * *"}]}
    agent: bot
    prompt: "the minute's run"
"""


def test_a_cron_tick_seen_by_two_nodes_at_once_makes_one_event_and_one_job(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    hub = _hub(tmp_path)
    seed = _clone(str(hub), tmp_path / "seed")
    commit_file(seed, ".dispatcher/triggers.yml", TRIGGERS)
    git(seed, "push", "-q", "origin", "HEAD:main")
    names = [n.add(_clone(str(hub), tmp_path / label / "app"), "app")
             for label, n in zip("ab", nodes, strict=True)]  # fmt: skip
    assert names == ["app", "app"]
    start, fire = (
        datetime(2026, 12, 4, 5, 0, 30, tzinfo=UTC),
        datetime(2026, 12, 4, 5, 1, tzinfo=UTC),
    )
    schedules = [
        Schedules(n.service.intake.ingest, lambda _repo: {}, clock=lambda: start) for n in nodes
    ]
    try:
        for s in schedules:
            s.scheduler.start(paused=True)  # its steps run here, at the test's time
            s.set_repo("app", ["* * * * *"])
        ready = threading.Barrier(2)
        made: list[object] = [None, None]

        def tick(i: int) -> None:
            ready.wait()
            made[i] = schedules[i].tick(fire)

        threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Each node's scheduler fired the tick; the cluster kept one event of it.
        assert all(isinstance(m, list) and len(m) == 1 for m in made), made
        a, b = nodes
        events = a.store.events(limit=10)
        assert [(e.kind, e.dedup_key) for e in events] == [
            ("schedule", f"schedule:app:* * * * *:{fire.isoformat()}")
        ]
        jobs = a.store.jobs(limit=10)
        assert [(j.prompt, j.state.value) for j in jobs] == [("the minute's run", "queued")]
        assert [j.id for j in b.store.jobs(limit=10)] == [j.id for j in jobs]
    finally:
        for s in schedules:
            s.stop()
