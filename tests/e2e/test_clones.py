"""Clones per node end to end (docs/cluster.md): two daemons with state dirs of their
own (two nodes) on one PostgreSQL database, one after the other (the database is still
one daemon's at a time), each with its own clone of one bare hub repository: one repo,
each node's own path and jobs in its own clone; and on SQLite a daemon records its
node's clone and the repo's remote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.daemon_fixture import Daemon
from tests.e2e.test_postgres import FIRST_START_S
from tests.gitutil import git, init_repo

pytestmark = pytest.mark.timeout(300)


def _hub_and_clones(tmp_path: Path) -> tuple[Path, Path, Path]:
    seed = init_repo(tmp_path / "seed")
    hub = tmp_path / "hub.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(hub))
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
    git(tmp_path / "a", "clone", "-q", str(hub), "app")
    git(tmp_path / "b", "clone", "-q", f"file://{hub}", "checkout")
    return hub, tmp_path / "a" / "app", tmp_path / "b" / "checkout"


def _node(d: Daemon) -> str:
    return (d.state_dir / "node-id").read_text().strip()


def _run(d: Daemon, repo: str) -> dict[str, object]:
    out = d.cli("run", repo, "--prompt", "p", "--command", "sh -c 'echo x > X'", "--wait")
    return d.job(int(out.stdout.strip()))


def test_two_nodes_on_one_postgresql_database_share_a_repo_through_their_clones(
    pg_url: str, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    hub, mine, theirs = _hub_and_clones(tmp_path)
    a = daemon_factory(DISPATCHER_DATABASE_URL=pg_url).start(timeout=FIRST_START_S)
    assert a.cli("repo", "add", str(mine), "--max-parallel", "2").returncode == 0
    done_a = _run(a, "app")
    assert git(mine, "branch", "--list", str(done_a["branch"]))
    assert a.stop() == 0

    b = daemon_factory(DISPATCHER_DATABASE_URL=pg_url).start(timeout=FIRST_START_S)
    assert b.api.get("/repos").json() == []  # no clone of it on this node yet
    added = b.cli("repo", "add", str(theirs)).stdout  # named after A's, by its remote
    assert added.startswith(f"registered app at {theirs} ") and "1 other clone" in added
    shown = b.api.get("/repos/app").json()
    assert (shown["path"], shown["max_parallel"], shown["remote_key"]) == (
        str(theirs), 2, str(hub)
    )  # fmt: skip
    assert [(c["node"], c["path"]) for c in shown["clones"]] == [
        (_node(a), str(mine)), (_node(b), str(theirs))
    ]  # fmt: skip
    assert shown["jobs"] == {"succeeded": 1}  # the cluster's jobs of the repo
    done_b = _run(b, "app")  # in B's own clone
    assert git(theirs, "branch", "--list", str(done_b["branch"]))
    assert not git(mine, "branch", "--list", str(done_b["branch"]))
    assert str(done_b["worktree"]).startswith(str(b.state_dir))
    text = b.cli("repo", "show", "app").stdout
    assert f"{_node(a)} {mine}" in text and f"{_node(b)} {theirs}" in text
    b.cli("repo", "remove", "app")  # B's clone goes; the repo is A's still
    assert b.api.get("/repos").json() == []
    assert b.stop() == 0

    a.start()
    [repo] = a.api.get("/repos").json()
    assert (repo["path"], [c["node"] for c in repo["clones"]]) == (str(mine), [_node(a)])
    assert repo["jobs"] == {"succeeded": 2}
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM repo").scalar() == 1
    finally:
        engine.dispose()
    assert a.stop() == 0


def test_a_sqlite_daemon_records_its_clone_and_the_repo_s_remote(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    hub, mine, _ = _hub_and_clones(tmp_path)
    d = daemon_factory().start()
    solo = init_repo(tmp_path / "solo")
    d.add_repo(mine, "app")
    d.add_repo(solo, "solo")
    repos = {r["name"]: r for r in json.loads(d.cli("repo", "list", "--json").stdout)}
    assert repos["app"]["remote_key"] == str(hub) and repos["solo"]["remote_key"] is None
    assert [(c["node"], c["path"]) for c in repos["app"]["clones"]] == [(_node(d), str(mine))]
    shown = d.cli("repo", "show", "app").stdout.splitlines()
    assert not [ln for ln in shown if ln.startswith("clones ")]  # one clone: as before
    assert d.stop() == 0
