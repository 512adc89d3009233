"""Clones per node (docs/cluster.md): one repo row for the cluster, matched across
machines by its normalised remote URL, and each node's own clone of it; on both
databases, with real git clones of a bare hub repository."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.errors import AlreadyExists, InvalidState, NotFound
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Clone, Repo, RepoUpdate, Worker
from dispatcher.store.repochanges import APPLICATION_NAME
from dispatcher.store.workers import WorkerStore
from tests.clusterutil import Node, _clone, _hub
from tests.gitutil import git, init_repo
from tests.migrationutil import downgrade, upgrade
from tests.test_store import add_job
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql).all()]
    finally:
        engine.dispose()


def test_two_nodes_register_clones_of_one_repo_and_each_sees_its_own_path(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    hub = _hub(tmp_path)
    # The same hub reached two ways: a path on one machine, a file:// URL on the other.
    mine = _clone(str(hub), tmp_path / "a" / "app")
    theirs = _clone(f"file://{hub}", tmp_path / "b" / "checkout")
    assert a.add(mine, "app", max_parallel=3) == "app"
    # No name given: the remote finds the repo, whatever this clone's directory is called;
    # its settings are the repo's (the request's are not applied).
    assert b.add(theirs, max_parallel=7) == "app"
    url = a.store.url
    assert _rows(url, "SELECT name, remote_key, max_parallel FROM repo") == [("app", str(hub), 3)]
    assert sorted(_rows(url, "SELECT node, path FROM clone")) == sorted(
        [(a.node, str(mine)), (b.node, str(theirs))]
    )
    assert a.store.repo_by_name("app").path == str(mine)
    assert b.store.repo_by_name("app").path == str(theirs)
    assert [r.path for r in b.store.repos()] == [str(theirs)]
    for node, path in ((a, mine), (b, theirs)):
        shown = node.service.repos.get("app")
        assert shown.path == str(path) and shown.exists
        assert [(c.node, c.path) for c in shown.clones] == [
            (a.node, str(mine)),
            (b.node, str(theirs)),
        ]
        assert [r.path for r in node.service.repos.all()] == [str(path)]
        assert node.store.find_repo(path=str(path)) is not None
        assert node.store.find_repo(name="app").path == str(path)  # type: ignore[union-attr]
    # Settings are the cluster's; a change is returned with the changer's own path.
    changed = b.service.repos.update("app", RepoUpdate(max_parallel=5))
    assert (changed.max_parallel, changed.path) == (5, str(theirs))
    assert _rows(url, "SELECT path FROM repo") == [(str(mine),)]  # never this node's


def test_a_node_registers_each_repo_once_and_a_name_clash_is_one_line(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    hub, other_hub = _hub(tmp_path), _hub(tmp_path, "other")
    a.add(_clone(str(hub), tmp_path / "a" / "app"), "app")
    # A second clone of the same remote on the same node: its name is taken here.
    with pytest.raises(AlreadyExists, match=r"^a repo named 'app' is already registered on this node; pass --name$"):  # fmt: skip
        a.add(_clone(str(hub), tmp_path / "a" / "again"), "app")
    # ... and without a name it is a repo of its own (as before clones: one daemon).
    assert a.add(tmp_path / "a" / "again") == "again"
    # Another remote under the same name on another node.
    with pytest.raises(AlreadyExists) as refused:
        b.add(_clone(str(other_hub), tmp_path / "b" / "app"), "app")
    assert str(refused.value) == (
        f"a repo named 'app' is already registered for another remote ({hub}, not {other_hub});"
        " pass --name"
    )
    # No remote: a repo of its node alone, matched by nothing.
    a.add(init_repo(tmp_path / "a" / "solo"), "solo")
    with pytest.raises(AlreadyExists, match="with no remote to match clones by"):
        b.add(init_repo(tmp_path / "b" / "solo"), "solo")
    assert b.add(tmp_path / "b" / "solo", "solo-b") == "solo-b"
    assert b.add(tmp_path / "b" / "app", "other-app") == "other-app"
    assert [r.name for r in b.store.repos()] == ["other-app", "solo-b"]


def test_a_job_is_claimed_only_by_a_node_with_a_clone_of_its_repo(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    x = a.store.repo_by_name(a.add(_clone(str(_hub(tmp_path, "x")), tmp_path / "a" / "x")))
    y_hub = _hub(tmp_path, "y")
    a.add(_clone(str(y_hub), tmp_path / "a" / "y"))
    y = b.store.repo_by_name(b.add(_clone(str(y_hub), tmp_path / "b" / "y")))
    assert x.id is not None and y.id is not None
    job_x, job_y = add_job(a.store, x.id), add_job(a.store, y.id)
    taken = b.store.claim_pass(max_parallel=10, per_repo_default=10)
    assert [c.job_id for c in taken.claimed] == [job_y]
    assert taken.claimed[0].repo.path == str(tmp_path / "b" / "y")
    assert not taken.waiting  # X's queued job is none of B's business
    assert b.store.job(job_x).state is JobState.QUEUED
    taken = a.store.claim_pass(max_parallel=10, per_repo_default=10)
    assert [(c.job_id, c.repo.path) for c in taken.claimed] == [(job_x, str(tmp_path / "a" / "x"))]


def test_removing_a_repo_on_a_node_removes_its_clone_and_the_last_clone_the_repo(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    hub = _hub(tmp_path)
    a.add(_clone(str(hub), tmp_path / "a" / "app"), "app")
    b.add(_clone(str(hub), tmp_path / "b" / "app"), "app")
    repo = a.store.repo_by_name("app")
    assert repo.id is not None
    job = add_job(a.store, repo.id)
    with pytest.raises(InvalidState, match="active job"):  # the store's rule, as before
        b.service.repos.remove("app")
    a.store.move(job, JobState.QUEUED, JobState.CANCELED)
    removed = b.service.repos.remove("app")
    assert removed.path == str(tmp_path / "b" / "app")
    with pytest.raises(NotFound, match=r"^repo 'app' has no clone on this node"):
        b.store.repo_by_name("app")
    with pytest.raises(NotFound, match=rf"^repo {repo.id} has no clone on this node"):
        b.store.repo(repo.id)
    assert [c.node for c in a.service.repos.get("app").clones] == [a.node]
    assert a.store.job(job).repo_id == repo.id  # the repo and its jobs stay A's
    # B may register it again; A's removal of the last clone takes the repo and its jobs.
    b.add(tmp_path / "b" / "app")
    b.service.repos.remove("app")
    a.service.repos.remove("app")
    assert _rows(a.store.url, "SELECT count(*) FROM repo") == [(0,)]
    assert _rows(a.store.url, "SELECT count(*) FROM job") == [(0,)]
    assert _rows(a.store.url, "SELECT count(*) FROM clone") == [(0,)]


def test_each_node_keeps_the_last_seen_refs_of_its_own_clone(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    """The ref watcher's catch-up compares a clone with what was seen in that clone: two
    nodes' clones of one repo have branches of their own."""
    a, b = nodes
    hub = _hub(tmp_path)
    a.add(_clone(str(hub), tmp_path / "a" / "app"), "app")
    b.add(_clone(str(hub), tmp_path / "b" / "app"), "app")
    repo_id = a.store.repo_by_name("app").id
    assert repo_id is not None
    main = {"refs/heads/main": git(tmp_path / "a" / "app", "rev-parse", "main")}
    assert a.store.ref_state(repo_id) == b.store.ref_state(repo_id) == {}  # none seen yet
    a.store.save_ref_state(repo_id, {**main, "refs/heads/only-a": "a" * 40})
    b.store.save_ref_state(repo_id, {"refs/heads/main": "b" * 40})
    assert a.store.ref_state(repo_id) == {**main, "refs/heads/only-a": "a" * 40}
    assert b.store.ref_state(repo_id) == {"refs/heads/main": "b" * 40}


def test_the_first_node_to_start_takes_the_clones_recorded_without_one(
    migrated_db_url: str,
) -> None:
    nodeless = Store(migrated_db_url)  # as the migration leaves a database's repos
    first, second = (Store(migrated_db_url, node=str(uuid.uuid4())) for _ in range(2))
    try:
        repo = nodeless.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        add_job(nodeless, repo.id)
        assert [r.name for r in nodeless.repos()] == ["r"]
        assert first.repos() == [] and second.repos() == []
        assert first.claim_pass(max_parallel=5, per_repo_default=5).claimed == []
        assert first.adopt_clones() == 1
        assert [(r.name, r.path) for r in first.repos()] == [("r", "/srv/r")]
        assert nodeless.find_repo(name="r") is None
        assert len(first.claim_pass(max_parallel=5, per_repo_default=5).claimed) == 1
        if migrated_db_url.startswith("sqlite"):
            # The state dir's own database, one daemon: a new node id (its node-id file
            # deleted) is the same daemon, and takes every clone, not none.
            assert second.adopt_clones() == 1
            assert [(r.name, r.path) for r in second.repos()] == [("r", "/srv/r")]
        else:
            assert second.adopt_clones() == 0
            assert second.repos() == []
    finally:
        for s in (nodeless, first, second):
            s.close()


def _at_0020_with_repos(url: str, workers: list[str | None]) -> None:
    """A database at 0020 with two repos and a worker row for each of ``workers``' nodes,
    oldest first."""
    upgrade(url, "0020")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO repo (name, path, default_branch, created_at) VALUES "
                "('r', '/srv/r', 'main', '2026-12-01 00:00:00'), "
                "('s', '/srv/s', 'main', '2026-12-01 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO refstate (repo_id, ref, sha) SELECT id, 'refs/heads/main', "
                f"'{'a' * 40}' FROM repo WHERE name = 'r'"
            )
            for worker_node in workers:
                conn.execute(
                    sa.text(
                        "INSERT INTO worker (name, node, host, pid, state_dir, api_url, "
                        "slots, started_at) VALUES ('w', :node, 'h', 1, '/s', 'http://x', "
                        "2, '2026-12-01 00:00:00')"
                    ),
                    {"node": worker_node},
                )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("workers", "node"),
    [
        (["an-older-node", "the-last-node", None], "the-last-node"),  # newest with a node
        ([None, None], None),  # starts from before 0020: the first start after takes them
    ],
)
def test_0022_gives_each_repo_s_path_to_the_last_node_and_goes_down_again(
    db_url: str, workers: list[str | None], node: str | None
) -> None:
    _at_0020_with_repos(db_url, workers)
    migrate(db_url)
    assert sorted(_rows(db_url, "SELECT node, path FROM clone")) == [
        (node, "/srv/r"), (node, "/srv/s")
    ]  # fmt: skip
    store = Store(db_url, node=node)
    try:
        assert [(r.name, r.path, r.remote_key) for r in store.repos()] == [
            ("r", "/srv/r", None), ("s", "/srv/s", None)
        ]  # fmt: skip
        r, s = store.repos()
        assert r.id is not None and s.id is not None
        assert store.ref_state(r.id) == {"refs/heads/main": "a" * 40}  # the clone's now
        assert store.ref_state(s.id) == {}
        # Another node's repo at one of the same paths: no longer one path per repo.
        other = Store(db_url, node=str(uuid.uuid4()))
        other.add_repo(Repo(name="t", path="/srv/t", default_branch="main"))
        other.close()
    finally:
        store.close()
    downgrade(db_url, "0020")
    assert _rows(db_url, "SELECT name, path FROM repo ORDER BY id") == [
        ("r", "/srv/r"), ("s", "/srv/s"), ("t", "/srv/t")
    ]  # fmt: skip
    assert _rows(db_url, "SELECT ref, sha FROM refstate") == [("refs/heads/main", "a" * 40)]
    engine = sa.create_engine(db_url)
    try:
        assert "clone" not in sa.inspect(engine).get_table_names()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # unique again
            conn.exec_driver_sql(
                "INSERT INTO repo (name, path, default_branch, created_at) "
                "VALUES ('u', '/srv/r', 'main', '2026-12-01 00:00:00')"
            )
    finally:
        engine.dispose()
    migrate(db_url)
    assert len(_rows(db_url, "SELECT id FROM clone")) == 3


def test_a_store_s_clone_rows_are_the_model_s(migrated_db_url: str) -> None:
    store = Store(migrated_db_url, node="n")
    try:
        repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        [clone] = store.clones()[repo.id]
        assert isinstance(clone, Clone)
        assert (clone.repo_id, clone.node, clone.path) == (repo.id, "n", "/srv/r")
    finally:
        store.close()


def test_a_node_hears_another_node_s_repo_writes_even_after_its_connection_drops(
    pg_migrated_url: str,
) -> None:
    """The repo cache (one read, kept until a repo write) is dropped by other nodes'
    writes too: PostgreSQL's NOTIFY, heard on a connection of the store's own."""
    a, b = (Store(pg_migrated_url, node=str(uuid.uuid4())) for _ in range(2))
    killer = sa.create_engine(pg_migrated_url)
    try:
        first = a.add_repo(Repo(name="r", path="/a/r", default_branch="main", remote_key="k"))
        b.add_repo(Repo(name="r", path="/b/r", default_branch="main", remote_key="k"))
        assert first.id is not None
        changes = b.hear_repo_changes()
        assert changes is not None
        wait_until(changes.listening.is_set, "B to listen")
        assert b.repo_by_name("r").max_parallel is None  # cached
        a.update_repo(first.id, max_parallel=3)
        wait_until(lambda: b.repo_by_name("r").max_parallel == 3, "B to hear A's change")
        assert b.repo_by_name("r").path == "/b/r"
        with killer.connect() as conn:  # the listener's connection dropped by the server
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE application_name = '{APPLICATION_NAME}'"
            )
        wait_until(lambda: not changes.listening.is_set(), "B to notice", timeout=10)
        wait_until(changes.listening.is_set, "B to listen again", timeout=30)
        a.update_repo(first.id, max_parallel=4)
        wait_until(lambda: b.repo_by_name("r").max_parallel == 4, "B to hear it again")
    finally:
        killer.dispose()
        a.close()
        b.close()


def test_without_listening_a_node_s_repo_cache_misses_other_nodes_writes(
    pg_migrated_url: str,
) -> None:
    """What the listener is for (and that the test above would fail without it)."""
    a, b = (Store(pg_migrated_url, node=str(uuid.uuid4())) for _ in range(2))
    try:
        first = a.add_repo(Repo(name="r", path="/a/r", default_branch="main", remote_key="k"))
        b.add_repo(Repo(name="r", path="/b/r", default_branch="main", remote_key="k"))
        assert first.id is not None
        assert b.repo_by_name("r").max_parallel is None
        a.update_repo(first.id, max_parallel=3)
        assert b.repo_by_name("r").max_parallel is None  # stale: no one told it
    finally:
        a.close()
        b.close()


def test_a_node_s_free_slots_count_only_the_jobs_its_own_workers_run(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    """max-parallel is per daemon: A running its one slot's job leaves B's slot free (a
    repo's own limit still counts every node's jobs)."""
    a, b = nodes
    hub = str(_hub(tmp_path))
    x = a.store.repo_by_name(a.add(_clone(hub, tmp_path / "a" / "x"), "x"))
    b.add(_clone(hub, tmp_path / "b" / "x"), "x")
    assert x.id is not None
    workers = WorkerStore(a.store)
    worker_of = {
        n.node: workers.begin(
            Worker(name=label, node=n.node, host="h", pid=1, state_dir=f"/s/{label}",
                   api_url="x", slots=1)
        ).id
        for label, n in (("a", a), ("b", b))
    }  # fmt: skip
    first, second, third = (add_job(a.store, x.id) for _ in range(3))
    taken = a.store.claim_pass(max_parallel=1, per_repo_default=2, worker_id=worker_of[a.node])
    assert [c.job_id for c in taken.claimed] == [first]
    assert a.store.claim_pass(max_parallel=1, per_repo_default=2, worker_id=worker_of[a.node]) \
        .claimed == []  # fmt: skip
    taken = b.store.claim_pass(max_parallel=1, per_repo_default=2, worker_id=worker_of[b.node])
    assert [c.job_id for c in taken.claimed] == [second]
    # The repo's limit (2) is the cluster's: a third node-slot would not take the third.
    assert b.store.claim_pass(max_parallel=5, per_repo_default=2, worker_id=worker_of[b.node]) \
        .claimed == []  # fmt: skip
    assert b.store.job(third).state is JobState.QUEUED
