"""The store's two backends (dispatcher/store/backends.py) on a real SQLite file and a real
PostgreSQL (tests/pg.py): the same migrations make the same schema on both, every
migration goes down and up again on both, PostgreSQL's sessions are what the store relies
on (one writer at a time, snapshot reads), and claimers in several processes on one
PostgreSQL queue never take a job twice nor more than the limits allow."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from dispatcher.config import Settings
from dispatcher.lifecycle import JobState
from dispatcher.store.backends import DAEMON_LOCK, WRITER_LOCK, backend_for
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Issue, Job, Repo
from tests.migrationutil import downgrade, head_revision, upgrade
from tests.pg import PgCluster
from tests.schemautil import snapshot
from tests.together import together_in_processes
from tests.waiting import wait_until


def test_the_migrations_make_the_same_schema_on_sqlite_and_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(sqlite_url)
    migrate(pg_url)
    lite, pg = snapshot(sqlite_url), snapshot(pg_url)
    assert {"repo", "job", "event", "team_message", "worker", "alembic_version"} <= set(lite)
    # procrastinate's tables are PostgreSQL's only (docs/cluster.md): its queue and workers.
    queue = {t for t in pg if t.startswith("procrastinate_")}
    assert queue == {"procrastinate_events", "procrastinate_jobs", "procrastinate_periodic_defers",
                     "procrastinate_workers"}  # fmt: skip
    assert sorted(lite) == sorted(set(pg) - queue)
    for table in lite:
        for part in ("columns", "primary_key", "indexes", "unique", "foreign_keys"):
            assert lite[table][part] == pg[table][part], f"{table} {part}"
    # What the comparison normalised is really there on PostgreSQL.
    engine = sa.create_engine(pg_url)
    try:
        cols = {c["name"]: c for c in sa.inspect(engine).get_columns("job")}
        assert isinstance(cols["pid_start"]["type"], sa.BigInteger)
        assert str(cols["id"]["default"]).startswith("nextval(")
    finally:
        engine.dispose()


def test_every_migration_goes_down_to_nothing_and_up_again(db_url: str) -> None:
    migrate(db_url)
    at_head = snapshot(db_url)
    downgrade(db_url, "base")
    assert set(snapshot(db_url)) <= {"alembic_version"}
    migrate(db_url)
    assert snapshot(db_url) == at_head


SHA = "a" * 40


def _at_0018_with_rows(url: str, *, dangling: bool = False) -> None:
    """A database at 0018 holding what a real one holds: a job, its retry and a delivery
    point at the job table (``dangling``: and a delivery whose job is gone)."""
    upgrade(url, "0018")
    engine = sa.create_engine(url)  # SQLite's foreign keys are off on a plain engine
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO repo (id, name, path, default_branch, created_at) "
                "VALUES (1, 'r', '/srv/r', 'main', '2026-12-01 00:00:00')"
            )
            for job_id, retry_of in ((1, None), (2, 1)):
                conn.exec_driver_sql(
                    "INSERT INTO job (id, repo_id, state, prompt, agent, base_ref, base_sha, "
                    "target_branch, timeout_s, branch, "
                    "max_attempts, attempt, created_at, cancel_requested, retry_of) VALUES "
                    f"({job_id}, 1, 'failed', 'p', 'x', 'main', '{SHA}', 'main', 60, 'b/{job_id}', 1, 1, "
                    f"'2026-12-01 00:00:00', false, {retry_of or 'NULL'})"
                )
            for delivery, job_id in ((1, 1), (2, 99) if dangling else (2, 2)):
                conn.exec_driver_sql(
                    "INSERT INTO delivery (id, job_id, target, url, state, ok, attempts, at) "
                    f"VALUES ({delivery}, {job_id}, 'ntfy', 'https://n.example/t', 'failed', "
                    "true, 1, '2026-12-01 00:00:00')"
                )
    finally:
        engine.dispose()


def _version(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar())
    finally:
        engine.dispose()


def test_a_sqlite_database_with_rows_pointing_at_jobs_upgrades_and_keeps_them(
    tmp_path: Path,
) -> None:
    """0019 copies the job table (batch mode) and drops the old one: with the store's
    foreign keys on, the drop failed on any database where a row points at a job."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    _at_0018_with_rows(url)
    migrate(url)
    assert _version(url) == head_revision()
    store = Store(url)
    try:
        jobs = [store.job(1), store.job(2)]
        assert [(j.retry_of, j.worker_id, j.state) for j in jobs] == [
            (None, None, JobState.FAILED), (1, None, JobState.FAILED)
        ]  # fmt: skip
        with store.reading() as s:
            conn = s.connection()
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again
            assert conn.exec_driver_sql("SELECT count(*) FROM delivery").scalar() == 2
    finally:
        store.close()


def test_a_migration_that_would_leave_rows_pointing_nowhere_is_refused_and_undone(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    _at_0018_with_rows(url, dangling=True)
    with pytest.raises(RuntimeError, match="rows pointing nowhere: delivery row 2 -> job"):
        migrate(url)
    assert _version(url) == "0018"


def test_procrastinate_s_schema_comes_and_goes_with_its_migration(pg_url: str) -> None:
    """0019 makes procrastinate's functions and types, and its downgrade leaves none."""
    engine = sa.create_engine(pg_url)
    count = (
        "SELECT (SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%%'),"
        " (SELECT count(*) FROM pg_type WHERE typname LIKE 'procrastinate%%')"
    )
    try:
        migrate(pg_url)
        with engine.connect() as conn:
            routines, kinds = conn.exec_driver_sql(count).one()
            assert routines > 10 and kinds >= 3
            heartbeat = "SELECT procrastinate_register_worker_v1()"
            assert conn.exec_driver_sql(heartbeat).scalar() is not None
            conn.rollback()
        downgrade(pg_url, "0018")
        with engine.connect() as conn:
            assert tuple(conn.exec_driver_sql(count).one()) == (0, 0)
        migrate(pg_url)
    finally:
        engine.dispose()


def test_a_bad_database_url_is_refused_in_one_line() -> None:
    pg = Settings(database_url="postgresql://u:secret@db.example/dispatcher")
    assert pg.db_url == "postgresql+psycopg://u:secret@db.example/dispatcher"
    assert Settings(database_url="postgres://h/d").db_url == "postgresql+psycopg://h/d"
    assert backend_for(pg.db_url).describe() == "postgresql+psycopg://u:***@db.example/dispatcher"
    for bad, why in (
        ("mysql://u:secret@h/d", "'mysql' is not a database the store runs on"),
        ("postgresql+psycopg2://h/d", "reached through psycopg, not 'psycopg2'"),
        ("sqlite://", "a SQLite URL names a file"),
        ("not a url", "not a database URL"),
    ):
        with pytest.raises(ValidationError, match=why) as info:
            Settings(database_url=bad)
        assert "secret" not in str(info.value)


# ---------------------------------------------------------------- PostgreSQL sessions


def test_postgresql_reads_are_read_only_snapshots_and_writes_hold_the_writer_lock(
    pg_migrated_url: str,
) -> None:
    store = Store(pg_migrated_url)
    try:
        with store.reading() as s:
            conn = s.connection()
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
        with store.writing() as s:
            conn = s.connection()
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
            held = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid()"
                f" AND (classid::bigint << 32 | objid::bigint) = {WRITER_LOCK}"
            ).scalar()
            assert held == 1
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "10s"
    finally:
        store.close()


def test_a_postgresql_write_waits_for_the_one_before_and_sees_what_it_wrote(
    pg_migrated_url: str,
) -> None:
    """The single writer: a second store's write (the next issue number: a read, then an
    insert) waits while another write is open, then counts its issue."""
    first, second = Store(pg_migrated_url), Store(pg_migrated_url)
    try:
        repo = first.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        repo_id = repo.id
        inside, release = threading.Event(), threading.Event()
        numbers: list[int] = []

        def hold() -> None:
            with first.writing() as s:
                s.add(Issue(repo_id=repo_id, number=1, title="first"))
                s.flush()
                inside.set()
                assert release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert inside.wait(30)

            def file_second() -> None:
                numbers.append(second.add_issue(Issue(repo_id=repo_id, number=0, title="2")).number)

            waiter = threading.Thread(target=file_second)
            waiter.start()

            def waiting_for_the_lock() -> bool:
                with first.reading() as s:
                    return bool(
                        s.connection()
                        .exec_driver_sql(
                            "SELECT count(*) FROM pg_locks"
                            " WHERE locktype = 'advisory' AND NOT granted"
                        )
                        .scalar()
                    )

            wait_until(waiting_for_the_lock, "the second write to wait for the writer lock")
            assert numbers == []
        finally:
            release.set()
            holder.join(30)
        waiter.join(30)
        assert numbers == [2]  # it saw the first write's issue 1, committed while it waited
    finally:
        first.close()
        second.close()


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from dispatcher.store.database import Store

    url, me, root, limit = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    store = Store(url)
    store.repos()  # connected and warm before the start
    (root / f"ready-{me}").touch()
    deadline = time.monotonic() + 30
    while not (root / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("never saw go")
        time.sleep(0.002)
    got, empty = [], 0
    while empty < 20:  # the limit is reached: a few more tries, racing the others
        batch = store.claim(max_parallel=limit, per_repo_default=10_000, limit=1)
        got.extend(c.job_id for c in batch)
        empty = 0 if batch else empty + 1
    store.close()
    print(json.dumps(got))
    """
)

CLAIMERS = 4


@pytest.mark.slow
def test_claimers_in_processes_on_one_postgresql_queue_never_pass_the_limits(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    """Four processes claim one job at a time, as fast as they can, from 120 queued jobs
    with room for 10 at once: each job is claimed once, and exactly 10 are (a claim that
    only compare-and-set the job's state could count the same free slot twice)."""
    url, limit = pg_migrated_url, 10
    store = Store(url)
    try:
        repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
        assert repo.id is not None
        for i in range(120):
            store.add_job(
                Job(repo_id=repo.id, prompt=f"p{i}", agent="command", base_ref="main",
                    base_sha="0" * 40, target_branch="main", timeout_s=60),
                branch_for=lambda jid: f"b/{jid}",
            )  # fmt: skip
        argvs = [
            [sys.executable, "-c", _CLAIMER, url, str(me), str(tmp_path / "claimers"), str(limit)]
            for me in range(CLAIMERS)
        ]
        outputs = together_in_processes(argvs, tmp_path / "claimers")
        claimed = [job_id for out in outputs for job_id in json.loads(out)]
        assert len(claimed) == len(set(claimed)), "a job was claimed twice"
        assert len(claimed) == limit, f"{len(claimed)} claimed with room for {limit}"
        preparing = store.jobs(state=JobState.PREPARING, limit=500)
        assert sorted(j.id for j in preparing) == sorted(claimed)
    finally:
        store.close()


def test_the_template_database_is_at_head(pg_migrated_url: str) -> None:
    """The per-test PostgreSQL databases are copies of one migrated to head."""
    engine = sa.create_engine(pg_migrated_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                (head_revision(),)
            ]
    finally:
        engine.dispose()


def test_the_store_reconnects_after_postgresql_drops_its_connections(
    pg_migrated_url: str,
) -> None:
    store = Store(pg_migrated_url)
    try:
        store.add_repo(Repo(name="before", path="/srv/before", default_branch="main"))
        assert [r.name for r in store.repos()] == ["before"]  # both pools hold a connection
        killer = sa.create_engine(pg_migrated_url, poolclass=sa.pool.NullPool)
        try:
            with killer.connect() as conn:
                killed = conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).scalar()
        finally:
            killer.dispose()
        assert killed is not None and killed >= 2
        assert [r.name for r in store.repos()] == ["before"]  # a read
        store.add_repo(Repo(name="after", path="/srv/after", default_branch="main"))  # a write
        assert sorted(r.name for r in store.repos()) == ["after", "before"]
    finally:
        store.close()


def test_a_daemon_hold_whose_connection_was_dropped_is_taken_again(
    pg_migrated_url: str,
) -> None:
    store = Store(pg_migrated_url)
    killer = sa.create_engine(pg_migrated_url, poolclass=sa.pool.NullPool)
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        f" AND (classid::bigint << 32 | objid::bigint) = {DAEMON_LOCK}"
    )
    try:
        store.hold_database()
        assert store.check_hold()
        with killer.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                f" AND (classid::bigint << 32 | objid::bigint) = {DAEMON_LOCK}"
            )
        wait_until(lambda: _scalar(killer, held) == 0, "the hold to be dropped")
        assert store.check_hold()  # taken again
        assert _scalar(killer, held) == 1
    finally:
        store.close()
        killer.dispose()


def _scalar(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def test_a_database_that_does_not_exist_is_refused_at_once_not_waited_for(
    pg_cluster: PgCluster,
) -> None:
    """The store waits (up to 60 s) for a server that is away, not for one that answers
    "no such database": that will not mend, and the error says so in its first line."""
    store = Store(pg_cluster.url("no_such_database"))
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError, match="no_such_database"):
            store.repos()
    finally:
        store.close()
    assert time.monotonic() - started < 30  # well inside the 60 s a restart gets
