"""The SQLite store: migrations, queries, compare-and-set moves and job claiming.

Real database files in ``tmp_path``; concurrency is exercised with real threads
(each with its own :class:`Store`) and real processes.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from dispatcher import lifecycle
from dispatcher.errors import InvalidState, NotFound
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Claimed, Store, migrate
from dispatcher.store.jobpath import StartBlocks
from dispatcher.store.models import Delivery, Event, Job, Repo
from tests import schemautil
from tests.migrationutil import downgrade, head_revision
from tests.schemautil import snapshot
from tests.together import together, together_in_processes

S = JobState
BIG = 10_000  # a parallelism limit that never binds


# ---------------------------------------------------------------- helpers


@pytest.fixture
def url(migrated_db_url: str) -> str:
    """A database at the newest schema, SQLite's and PostgreSQL's (tests/pg.py)."""
    return migrated_db_url


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    st = Store(url)
    try:
        yield st
    finally:
        st.close()


def raw_query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql).all()]
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def add_repo(store: Store, name: str, max_parallel: int | None = None) -> int:
    repo = store.add_repo(
        Repo(name=name, path=f"/srv/{name}", default_branch="main", max_parallel=max_parallel)
    )
    assert repo.id is not None
    return repo.id


def new_job(repo_id: int, prompt: str = "fix it") -> Job:
    return Job(
        repo_id=repo_id,
        prompt=prompt,
        agent="claude",
        base_ref="main",
        base_sha="0" * 40,
        target_branch="main",
        timeout_s=600.0,
    )


def branch_for(job_id: int) -> str:
    return f"dispatcher/{job_id}-fix-it"


def add_job(store: Store, repo_id: int) -> int:
    job = store.add_job(new_job(repo_id), branch_for=branch_for)
    assert job.id is not None
    return job.id


def add_jobs(store: Store, repo_id: int, n: int) -> list[int]:
    return [add_job(store, repo_id) for _ in range(n)]


def ids(claimed: list[Claimed]) -> list[int]:
    return [c.job_id for c in claimed]


def pairs(claimed: list[Claimed]) -> list[tuple[int, int]]:
    """(job id, repo id) of each claimed job, checking the rows are the claimed ones."""
    for c in claimed:
        assert c.job.state is S.PREPARING and c.job.claimed_at is not None
        assert c.repo.id == c.job.repo_id
    return [(c.job_id, c.repo_id) for c in claimed]


# ---------------------------------------------------------------- migrations


def test_migrate_empty_database_to_head(db_url: str) -> None:
    migrate(db_url)
    assert {"repo", "job", "alembic_version"} <= table_names(db_url)
    assert raw_query(db_url, "SELECT version_num FROM alembic_version") == [(head_revision(),)]


def test_migrate_twice_is_a_noop(db_url: str) -> None:
    migrate(db_url)
    st = Store(db_url)
    try:
        repo_id = add_repo(st, "kept")
        job_id = add_job(st, repo_id)
    finally:
        st.close()
    schema_before = snapshot(db_url)

    migrate(db_url)

    assert snapshot(db_url) == schema_before
    assert raw_query(db_url, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert raw_query(db_url, "SELECT id, name FROM repo") == [(repo_id, "kept")]
    assert raw_query(db_url, "SELECT id, state FROM job") == [(job_id, "queued")]


def test_migrate_twice_leaves_sqlites_schema_text_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    query = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    schema_before = raw_query(url, query)
    migrate(url)
    assert raw_query(url, query) == schema_before
    assert raw_query(url, "PRAGMA journal_mode") == [("wal",)]


def _compare_server_default(
    context: Any,
    inspected: Any,
    metadata: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """PostgreSQL has no ``json = text`` for Alembic's own check: compare JSON defaults as
    text (``'[]'::json`` against ``'[]'``); anything else the usual way (None)."""
    if isinstance(metadata.type, sa.JSON):
        return schemautil.default(inspected_default) != schemautil.default(
            rendered_metadata_default
        )
    return None


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """The models' tables: procrastinate's (PostgreSQL only, docs/cluster.md) are its own."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


def test_migrated_schema_matches_the_models(url: str) -> None:
    """A model change without a migration shows up here as a diff, on either database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True, "compare_server_default": _compare_server_default,
                    "include_name": _ours,
                },
            )  # fmt: skip
            diffs = compare_metadata(ctx, SQLModel.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_store_connections_use_wal_normal_sync_and_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    store = Store(url)
    try:
        for session_of in (store.reading, store.writing):
            with session_of() as s:
                conn = s.connection()
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


# ---------------------------------------------------------------- repos and jobs


def test_add_repo_and_look_it_up(store: Store) -> None:
    repo_id = add_repo(store, "alpha", max_parallel=2)
    repo = store.repo_by_name("alpha")
    assert repo.id == repo_id
    assert repo.path == "/srv/alpha"
    assert repo.max_parallel == 2
    assert repo.created_at.tzinfo is not None
    assert store.repo(repo_id).name == "alpha"
    assert store.find_repo(path="/srv/alpha") is not None
    assert store.find_repo(name="nope") is None


def test_unknown_repo_and_job_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.repo_by_name("nope")
    with pytest.raises(NotFound):
        store.repo(12345)
    with pytest.raises(NotFound):
        store.job(12345)
    with pytest.raises(NotFound):
        store.move(12345, S.QUEUED, S.CANCELED)


def test_add_job_names_its_branch_from_its_id(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    first = store.add_job(new_job(repo_id), branch_for=branch_for)
    second = store.add_job(new_job(repo_id), branch_for=lambda i: f"b/{i * 10}")
    assert first.id is not None
    assert second.id is not None
    assert second.id == first.id + 1
    assert first.branch == f"dispatcher/{first.id}-fix-it"
    assert second.branch == f"b/{second.id * 10}"
    stored = store.job(first.id)
    assert stored.branch == f"dispatcher/{first.id}-fix-it"
    assert stored.state is S.QUEUED
    assert stored.claimed_at is None


# ---------------------------------------------------------------- claim


def test_repo_reads_come_from_a_cache_that_every_repo_write_drops(store: Store) -> None:
    a = add_repo(store, "alpha")
    assert [r.name for r in store.repos()] == ["alpha"]
    reads = store.transactions.reads
    assert store.repo(a).name == store.repo_by_name("alpha").name == "alpha"
    assert store.transactions.reads == reads  # cached: no round trip
    b = add_repo(store, "beta")
    assert store.repo_by_name("beta").id == b
    store.update_repo(a, max_parallel=5)
    assert store.repo(a).max_parallel == 5
    store.remove_repo(b)
    with pytest.raises(NotFound, match="no repo named 'beta'"):
        store.repo_by_name("beta")
    with pytest.raises(NotFound, match=f"no repo with id {b}"):
        store.repo(b)
    assert [r.name for r in store.repos()] == ["alpha"]


def test_a_claim_pass_says_whether_queued_jobs_were_left(store: Store) -> None:
    a = add_repo(store, "alpha", max_parallel=1)
    job_ids = add_jobs(store, a, 2)
    taken = store.claim_pass(max_parallel=BIG, per_repo_default=BIG)
    assert ids(taken.claimed) == job_ids[:1] and taken.waiting  # the repo's slot is full
    store.move(job_ids[0], S.PREPARING, S.FAILED)
    taken = store.claim_pass(max_parallel=BIG, per_repo_default=BIG)
    assert ids(taken.claimed) == job_ids[1:] and not taken.waiting  # nothing queued
    add_jobs(store, a, 1)
    taken = store.claim_pass(max_parallel=BIG, per_repo_default=BIG, limit=1)
    assert taken.claimed == [] and taken.waiting  # the repo is busy: a slot may free


def test_the_claim_gives_each_job_its_own_free_port_block_and_spawn_nonce(store: Store) -> None:
    """The runner's claim (``start``) gives the jobs it takes their port blocks and spawn
    nonces in the claim's own write: a block an active job holds, or whose first port is
    in use on the machine, is skipped; two jobs of one claim never share one; the last
    job gets None when every block is taken; a block is free again once its job ended."""
    a = add_repo(store, "alpha")
    job_ids = add_jobs(store, a, 4)
    blocks = StartBlocks(base=20000, count=30, block=10, usable=lambda p: p != 20010)
    first = store.claim_pass(max_parallel=BIG, per_repo_default=BIG, limit=1, start=blocks)
    assert [(c.job_id, c.job.port) for c in first.claimed] == [(job_ids[0], 20000)]
    taken = store.claim_pass(max_parallel=BIG, per_repo_default=BIG, limit=2, start=blocks)
    # 20000 is held by the first job, 20010 is in use: one block left for two jobs.
    assert [(c.job_id, c.job.port) for c in taken.claimed] == [
        (job_ids[1], 20020), (job_ids[2], None),
    ]  # fmt: skip
    rows = [store.job(i) for i in job_ids[:3]]
    assert [(r.state, r.port) for r in rows] == [(S.PREPARING, p) for p in (20000, 20020, None)]
    nonces = [r.spawn_nonce for r in rows]
    assert all(n and len(n) == 12 for n in nonces) and len(set(nonces)) == 3
    assert [c.job.spawn_nonce for c in [*first.claimed, *taken.claimed]] == nonces
    store.advance(job_ids[0], S.PREPARING, S.RUNNING)
    store.advance(job_ids[0], S.RUNNING, S.SUCCEEDED)  # its block is free again
    again = store.claim_pass(max_parallel=BIG, per_repo_default=BIG, start=blocks)
    assert [(c.job_id, c.job.port) for c in again.claimed] == [(job_ids[3], 20000)]
    # A claim without ``start`` (no runner) writes neither.
    plain = add_jobs(store, a, 1)[0]
    assert store.claim(max_parallel=BIG, per_repo_default=BIG)[0].job.spawn_nonce is None
    assert store.job(plain).port is None


def test_advance_is_a_compare_and_set_checked_against_the_table(store: Store) -> None:
    """The job path's Core UPDATE: the move lands only from ``expected``, says whether a
    cancel was asked, and refuses a move the table forbids or a job in another state."""
    a = add_repo(store, "alpha")
    (job_id,) = add_jobs(store, a, 1)
    with pytest.raises(InvalidState, match="not preparing"):
        store.advance(job_id, S.PREPARING, S.RUNNING, pid=1)
    with pytest.raises(InvalidState):
        store.advance(job_id, S.QUEUED, S.SUCCEEDED)  # not in the transition table
    with pytest.raises(NotFound):
        store.advance(job_id + 100, S.PREPARING, S.RUNNING)
    store.claim(max_parallel=BIG, per_repo_default=BIG)
    store.update(job_id, cancel_requested=True)
    assert store.advance(job_id, S.PREPARING, S.RUNNING, pid=7, worktree="/w/7") is True
    row = store.job(job_id)
    assert (row.state, row.pid, row.worktree) == (S.RUNNING, 7, "/w/7")


def test_an_inserted_job_is_stored_as_returned(store: Store) -> None:
    """add_job's Core insert: every column as the object had it, the branch named from
    the new id; the returned object can be saved again like a loaded one."""
    a = add_repo(store, "alpha")
    row = new_job(a)
    row.command, row.workspace, row.concurrency_group = ["true", "x"], {"k": [1]}, "g"
    made = store.add_job(row, branch_for=branch_for)
    assert made.id is not None and made.branch == branch_for(made.id)
    stored = store.job(made.id)
    assert stored.model_dump() == made.model_dump()
    assert stored.state is S.QUEUED and stored.created_at == made.created_at
    assert store.update(made.id, error="e").error == "e"


def test_a_job_waiting_for_its_busy_group_is_left_waiting(store: Store) -> None:
    b = add_repo(store, "beta")
    grouped = []
    for _ in range(2):
        row = new_job(b)
        row.concurrency_group = "g"
        made = store.add_job(row, branch_for=branch_for)
        assert made.id is not None
        grouped.append(made.id)
    taken = store.claim_pass(max_parallel=BIG, per_repo_default=BIG)
    assert ids(taken.claimed) == grouped[:1] and taken.waiting  # the other waits for "g"


def test_claim_is_fifo_within_the_global_limit(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    job_ids = add_jobs(store, repo_id, 5)

    assert ids(store.claim(max_parallel=2, per_repo_default=BIG)) == job_ids[:2]
    # Both slots are busy: nothing more until one ends.
    assert store.claim(max_parallel=2, per_repo_default=BIG) == []
    store.move(job_ids[0], S.PREPARING, S.RUNNING)
    assert store.claim(max_parallel=2, per_repo_default=BIG) == []
    store.move(job_ids[0], S.RUNNING, S.SUCCEEDED)
    assert ids(store.claim(max_parallel=2, per_repo_default=BIG)) == [job_ids[2]]


def test_claim_is_fifo_across_repos(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    order = [add_job(store, repo) for repo in (b, a, b, a, a)]
    claimed = store.claim(max_parallel=3, per_repo_default=BIG)
    assert pairs(claimed) == [(order[0], b), (order[1], a), (order[2], b)]


def test_claim_respects_the_limit_argument(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    job_ids = add_jobs(store, repo_id, 5)
    assert ids(store.claim(max_parallel=BIG, per_repo_default=BIG, limit=2)) == job_ids[:2]


def test_saturated_repo_does_not_block_other_repos(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    a_jobs = add_jobs(store, a, 3)
    b_jobs = add_jobs(store, b, 2)

    claimed = store.claim(max_parallel=10, per_repo_default=1)
    assert pairs(claimed) == [(a_jobs[0], a), (b_jobs[0], b)]
    assert store.claim(max_parallel=10, per_repo_default=1) == []

    store.move(b_jobs[0], S.PREPARING, S.FAILED)
    assert pairs(store.claim(max_parallel=10, per_repo_default=1)) == [(b_jobs[1], b)]


def test_long_backlog_of_a_saturated_repo_does_not_block_other_repos(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    a_jobs = add_jobs(store, a, 70)
    b_job = add_job(store, b)
    claimed = store.claim(max_parallel=10, per_repo_default=1)
    assert pairs(claimed) == [(a_jobs[0], a), (b_job, b)]


def test_running_jobs_count_against_the_limits(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    running = add_job(store, a)
    store.move(running, S.QUEUED, S.PREPARING)
    store.move(running, S.PREPARING, S.RUNNING)
    a_next = add_job(store, a)
    b_next = add_job(store, b)

    # alpha is full with its running job; only beta's job fits.
    assert ids(store.claim(max_parallel=5, per_repo_default=1)) == [b_next]
    # global limit: running + preparing already fill 2 slots.
    assert store.claim(max_parallel=2, per_repo_default=5) == []
    assert ids(store.claim(max_parallel=3, per_repo_default=5)) == [a_next]


def test_repo_max_parallel_overrides_the_default(store: Store) -> None:
    wide = add_repo(store, "wide", max_parallel=3)
    narrow = add_repo(store, "narrow")
    wide_jobs = add_jobs(store, wide, 4)
    narrow_jobs = add_jobs(store, narrow, 2)

    claimed = store.claim(max_parallel=BIG, per_repo_default=1)
    assert ids(claimed) == [*wide_jobs[:3], narrow_jobs[0]]


def test_repo_max_parallel_can_be_below_the_default(store: Store) -> None:
    single = add_repo(store, "single", max_parallel=1)
    job_ids = add_jobs(store, single, 3)
    assert ids(store.claim(max_parallel=BIG, per_repo_default=5)) == job_ids[:1]


def test_claimed_jobs_are_preparing_with_claimed_at(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    job_ids = add_jobs(store, repo_id, 3)
    claimed = ids(store.claim(max_parallel=2, per_repo_default=BIG))
    assert claimed == job_ids[:2]
    for job_id in claimed:
        job = store.job(job_id)
        assert job.state is S.PREPARING
        assert job.claimed_at is not None
        assert job.claimed_at.tzinfo is not None
        assert job.claimed_at >= job.created_at
    left = store.job(job_ids[2])
    assert left.state is S.QUEUED
    assert left.claimed_at is None


def test_claim_with_nothing_queued_returns_nothing(store: Store) -> None:
    add_repo(store, "alpha")
    assert store.claim(max_parallel=BIG, per_repo_default=BIG) == []


def _queue_jobs(store: Store, n: int, tag: str = "") -> list[int]:
    a = add_repo(store, f"alpha{tag}")
    b = add_repo(store, f"beta{tag}")
    return [add_job(store, a if i % 2 else b) for i in range(n)]


def test_concurrent_claimers_in_threads_never_double_claim(store: Store, url: str) -> None:
    job_ids = _queue_jobs(store, 200)
    results: dict[int, list[int]] = {}

    # Every thread waits for the others after its first claim, so one thread cannot
    # drain the queue before the rest are scheduled; then they all race.
    rendezvous = threading.Barrier(8, timeout=30)

    def claimer(i: int) -> None:
        own = Store(url)
        got: list[int] = []
        try:
            while batch := own.claim(max_parallel=BIG, per_repo_default=BIG, limit=3):
                got.extend(ids(batch))
                if len(got) == len(batch):
                    rendezvous.wait()
        finally:
            own.close()
        results[i] = got

    together(8, claimer)

    claimed = [job_id for got in results.values() for job_id in got]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == job_ids
    assert all(results.get(i) for i in range(8)), "a claimer got nothing"
    assert {j.state for j in store.jobs(limit=500)} == {S.PREPARING}


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from dispatcher.store.database import Store

    url, me, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def wait_for(path):
        deadline = time.monotonic() + 30
        while not path.exists():
            if time.monotonic() > deadline:
                sys.exit(f"never saw {path.name}")
            time.sleep(0.002)

    store = Store(url)
    (root / f"ready-{me}").touch()
    wait_for(root / "go")
    got = []
    first = True
    while batch := store.claim(max_parallel=10_000, per_repo_default=10_000, limit=2):
        got.extend(c.job_id for c in batch)
        if first:
            # A rendezvous after the first claim: on a loaded 2-core machine one
            # process could otherwise drain the queue before the other is scheduled,
            # and then nothing concurrent was tested. From here both race freely.
            first = False
            (root / f"claimed-{me}").touch()
            wait_for(root / f"claimed-{1 - int(me)}")
    store.close()
    print(json.dumps(got))
    """
)


def _claim_in_two_processes(url: str, root: Path) -> list[list[int]]:
    """Two claimer processes released at once; what each of them claimed."""
    argvs = [[sys.executable, "-c", _CLAIMER, url, str(me), str(root)] for me in range(2)]
    return [json.loads(out) for out in together_in_processes(argvs, root)]


def test_concurrent_claimers_in_processes_never_double_claim(
    store: Store, url: str, tmp_path: Path
) -> None:
    job_ids = _queue_jobs(store, 400)
    per_process = _claim_in_two_processes(url, tmp_path / "claimers")
    claimed = [job_id for got in per_process for job_id in got]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == job_ids, "a job was lost"
    assert all(per_process), "a claimer got nothing"
    assert {j.state for j in store.jobs(limit=1000)} == {S.PREPARING}


# ---------------------------------------------------------------- move


def test_move_from_a_wrong_state_raises_and_changes_nothing(store: Store) -> None:
    job_id = add_job(store, add_repo(store, "alpha"))
    with pytest.raises(InvalidState, match="is queued") as info:
        store.move(job_id, S.RUNNING, S.SUCCEEDED, error="boom", exit_code=0)
    assert info.value.details["state"] == "queued"
    job = store.job(job_id)
    assert job.state is S.QUEUED
    assert job.error is None
    assert job.exit_code is None


def test_move_forbidden_by_the_table_raises_and_changes_nothing(store: Store) -> None:
    job_id = add_job(store, add_repo(store, "alpha"))
    with pytest.raises(InvalidState, match="cannot become succeeded"):
        store.move(job_id, S.QUEUED, S.SUCCEEDED, exit_code=0)
    job = store.job(job_id)
    assert job.state is S.QUEUED
    assert job.exit_code is None


def test_claim_goes_through_the_transition_table(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's bulk move is checked like every other: a table that forbids
    queued -> preparing makes it claim nothing and change nothing."""
    job_id = add_job(store, add_repo(store, "alpha"))
    monkeypatch.setitem(lifecycle.TRANSITIONS, S.QUEUED, frozenset({S.CANCELED}))
    with pytest.raises(InvalidState, match="cannot become preparing"):
        store.claim(max_parallel=BIG, per_repo_default=BIG)
    job = store.job(job_id)
    assert job.state is S.QUEUED
    assert job.claimed_at is None


def test_move_sets_state_and_fields(store: Store) -> None:
    job_id = add_job(store, add_repo(store, "alpha"))
    moved = store.move(job_id, {S.QUEUED, S.PREPARING}, S.CANCELED, error="stopped")
    assert moved.state is S.CANCELED
    assert moved.error == "stopped"
    stored = store.job(job_id)
    assert stored.state is S.CANCELED
    assert stored.error == "stopped"


def test_concurrent_moves_only_one_wins(store: Store) -> None:
    job_id = add_job(store, add_repo(store, "alpha"))
    wins: list[int] = []
    losses: list[InvalidState] = []
    lock = threading.Lock()

    def mover(i: int) -> None:
        try:
            store.move(job_id, S.QUEUED, S.CANCELED, error=f"by {i}")
        except InvalidState as exc:
            with lock:
                losses.append(exc)
        else:
            with lock:
                wins.append(i)

    together(16, mover)

    assert len(wins) == 1
    assert len(losses) == 15
    assert all(e.details["state"] == "canceled" for e in losses)
    job = store.job(job_id)
    assert job.state is S.CANCELED
    assert job.error == f"by {wins[0]}"


# ---------------------------------------------------------------- listing


def test_jobs_are_keyset_paginated_newest_first(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    job_ids = add_jobs(store, repo_id, 7)
    newest_first = job_ids[::-1]

    pages: list[list[int]] = []
    before: int | None = None
    while page := [j.id for j in store.jobs(before=before, limit=3)]:
        pages.append([j for j in page if j is not None])
        before = pages[-1][-1]
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]


def test_jobs_filter_by_state_and_repo(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    a1, b1, a2, b2, a3 = (add_job(store, r) for r in (a, b, a, b, a))
    store.move(a2, S.QUEUED, S.CANCELED)
    store.move(b2, S.QUEUED, S.CANCELED)

    def listed(jobs: list[Job]) -> list[int | None]:
        return [j.id for j in jobs]

    assert listed(store.jobs(repo_id=a)) == [a3, a2, a1]
    assert listed(store.jobs(repo_id=b)) == [b2, b1]
    assert listed(store.jobs(state=S.CANCELED)) == [b2, a2]
    assert listed(store.jobs(state=S.QUEUED, repo_id=a)) == [a3, a1]
    assert listed(store.jobs(state=S.QUEUED, repo_id=a, before=a3)) == [a1]
    assert listed(store.jobs(state=S.RUNNING)) == []
    assert store.job_counts(a) == {a: {"queued": 2, "canceled": 1}}
    assert store.job_counts() == {
        a: {"queued": 2, "canceled": 1},
        b: {"queued": 1, "canceled": 1},
    }


# ---------------------------------------------------------------- remove_repo


def test_remove_repo_refuses_while_jobs_are_active(store: Store) -> None:
    repo_id = add_repo(store, "alpha")
    job_id = add_job(store, repo_id)
    with pytest.raises(InvalidState, match="1 active job"):
        store.remove_repo(repo_id)
    assert store.repo(repo_id).name == "alpha"
    assert store.job(job_id).state is S.QUEUED

    store.move(job_id, S.QUEUED, S.CANCELED)
    store.remove_repo(repo_id)
    with pytest.raises(NotFound):
        store.repo(repo_id)
    with pytest.raises(NotFound):
        store.job(job_id)


def test_remove_repo_leaves_other_repos_alone(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    add_job(store, a)
    b_job = add_job(store, b)
    store.move(b_job, S.QUEUED, S.DISCARDED)
    store.remove_repo(b)
    assert [r.name for r in store.repos()] == ["alpha"]
    assert len(store.jobs(repo_id=a)) == 1


def test_remove_repo_with_notification_deliveries(store: Store) -> None:
    a = add_repo(store, "alpha")
    b = add_repo(store, "beta")
    gone, kept = add_job(store, a), add_job(store, b)
    for job_id in (gone, kept):
        store.move(job_id, S.QUEUED, S.CANCELED)
        store.add_delivery(
            Delivery(job_id=job_id, target="ntfy", url="http://x/t", state="canceled", ok=True,
                     attempts=1, message_id=f"msg_{job_id}")
        )  # fmt: skip
    store.remove_repo(a)  # was: FOREIGN KEY constraint failed
    assert [r.name for r in store.repos()] == ["beta"]
    assert store.deliveries(gone) == []
    assert [d.message_id for d in store.deliveries(kept)] == [f"msg_{kept}"]


def test_claim_uses_the_trigger_files_max_parallel_below_the_repos_own(store: Store) -> None:
    from_file = add_repo(store, "from-file")
    store.update_repo(from_file, triggers_max_parallel=2)
    both = add_repo(store, "both")
    store.update_repo(both, triggers_max_parallel=3, max_parallel=1)
    for _ in range(4):
        add_job(store, from_file)
        add_job(store, both)
    claimed = store.claim(max_parallel=100, per_repo_default=10)
    per_repo = {rid: sum(1 for c in claimed if c.repo_id == rid) for rid in (from_file, both)}
    assert per_repo == {from_file: 2, both: 1}


def test_claim_skips_busy_groups_and_backoffs_without_blocking_later_jobs(store: Store) -> None:
    from datetime import timedelta

    from dispatcher.store.models import utcnow

    a = add_repo(store, "alpha")

    def job(group: str | None = None, wait: bool = False) -> int:
        row = new_job(a)
        row.concurrency_group = group
        row.not_before = utcnow() + timedelta(hours=1) if wait else None
        made = store.add_job(row, branch_for=branch_for)
        assert made.id is not None
        return made.id

    first = job("g")
    assert ids(store.claim(max_parallel=BIG, per_repo_default=2)) == [first]
    # Older queued jobs that may not run yet (same busy group, backing off) come
    # first in the queue; the two later ones still fill the repo's two slots.
    blocked = [job("g"), job("g"), job(wait=True), job("g")]
    later = [job(), job("h"), job("h")]
    store.move(first, S.PREPARING, S.RUNNING)
    claimed = ids(store.claim(max_parallel=BIG, per_repo_default=3))
    assert claimed == later[:2]  # one slot was busy; "h" runs one at a time
    assert all(store.job(j).state is S.QUEUED for j in blocked)


def test_the_forge_migration_goes_down_and_up_again(url: str) -> None:
    """0016 (the job's push and pull request columns) has a downgrade that works."""
    migrate(url)
    downgrade(url, "0015")
    columns = column_names(url, "job")
    assert "pr_url" not in columns and "parent_id" in columns
    migrate(url)
    columns = column_names(url, "job")
    assert {"pr_url", "pr_number", "pr_state", "pushed_sha", "forge_error", "on_success"} <= columns


def test_the_rebase_and_fetch_migration_goes_down_and_up_again(url: str) -> None:
    """0017 (the job's rebase, the repo's fetch setting) has a downgrade that works."""
    migrate(url)
    downgrade(url, "0016")
    job, repo = column_names(url, "job"), column_names(url, "repo")
    assert "rebased_onto" not in job and "pr_url" in job and "fetch" not in repo
    migrate(url)
    job, repo = column_names(url, "job"), column_names(url, "repo")
    assert {"rebased_onto", "rebased_at"} <= job and {"fetch", "fetch_remote"} <= repo


def test_the_pr_action_migration_goes_down_and_up_again(url: str) -> None:
    """0018 (the fix loops' pr_action table) has a downgrade that works."""
    migrate(url)
    downgrade(url, "0017")
    tables = table_names(url)
    assert "pr_action" not in tables and "job" in tables
    migrate(url)
    columns = column_names(url, "pr_action")
    assert {"root_id", "dedup_key", "kind", "state", "prompt", "job_id"} <= columns


# ---------------------------------------------------------------- NUL in text


def test_a_nul_in_text_is_stored_as_u_fffd_on_both_backends(store: Store) -> None:
    """PostgreSQL's text refuses NUL: the store writes U+FFFD instead, on SQLite too."""
    repo_id = add_repo(store, "app")
    job = store.add_job(new_job(repo_id, prompt="fix\x00it"), branch_for=branch_for)
    assert job.id is not None
    store.update(job.id, summary="done\x00 with a NUL", error="a\x00b")
    got = store.job(job.id)
    assert (got.prompt, got.summary, got.error) == (
        "fix\ufffdit", "done\ufffd with a NUL", "a\ufffdb",
    )  # fmt: skip
    event = store.add_event(
        Event(repo_id=repo_id, kind="manual", source="api", dedup_key="k\x00",
              payload={"text": "x\x00y"}, notes=["n\x00"])
    )  # fmt: skip
    assert event is not None and event.id is not None
    seen = store.event(event.id)
    assert seen.dedup_key == "k\ufffd"
    # JSON keeps a NUL (escaped as \u0000 in the column), on both.
    assert (seen.payload, seen.notes) == ({"text": "x\x00y"}, ["n\x00"])
