"""Store round trips per job: trivial jobs through the real service and runner (a real
git repo, real ``true`` agents, a real SQLite file and a real PostgreSQL), counting the
store's transactions (:class:`~dispatcher.store.database.Transactions`) from the first
submit to the last job let go. A change that adds reads or writes back to the job path fails here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dispatcher.config import Settings
from dispatcher.jobs.pool import WorktreePool
from dispatcher.jobs.runner import Runner
from dispatcher.lifecycle import JobState
from dispatcher.service import Service
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Job, JobCreate, Repo, RepoCreate
from tests.gitutil import init_repo
from tests.waiting import wait_until

JOBS = 12
# Per trivial job, submit to finish: the insert, about one claim (which also gives the
# job its ports and spawn nonce), the move to ``running`` (with the worktree's path)
# and the end: measured 3.8-4.0 (4.9-5.1 before the claim took over the port's write;
# 14.1-14.4 before issue 18's cuts, about 7.5 of them reads). The slack is the claim
# loop's wake-ups, which depend on timing. Reads: none on the job path (repos come from
# the store's cache).
MAX_PER_JOB = 4.5
MAX_READS_PER_JOB = 0.5
# SQL statements per job (the transactions' own BEGIN and writer lock not counted): the
# insert and its branch, the claim's busy rows, queued repos, candidates and move (one
# UPDATE ... RETURNING), and one UPDATE for each of the two moves: measured 7.2-8.0
# (10.6 before, with the port's read and write and the claim's read-back of its rows).
MAX_STATEMENTS_PER_JOB = 9.0


@dataclass
class World:
    service: Service
    store: Store
    pool: WorktreePool
    runner: Runner
    ended: set[int]
    lock: threading.Lock


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    """On SQLite and on PostgreSQL (tests/pg.py): the same round trips on both."""
    with make_world(tmp_path, database_url=db_url) as w:
        yield w


@contextmanager
def make_world(
    tmp_path: Path, *, claim_fallback_s: float = 1.0, database_url: str | None = None
) -> Iterator[World]:
    """The service and runner in this process; ``claim_fallback_s``: the claim loop's
    fallback tick, set before it starts; ``database_url``: an empty database (default:
    SQLite in the state dir)."""
    settings = Settings(
        state_dir=tmp_path / "state", max_parallel=4, max_parallel_per_repo=4, watch_files=False,
        database_url=database_url,
    )  # fmt: skip
    settings.ensure_dirs()
    migrate(settings.db_url)
    store = Store(settings.db_url)
    pool = WorktreePool(settings, store.repos, lambda repo: [])
    runner = Runner(settings, store, pool)
    runner.claim_fallback_s = claim_fallback_s
    service = Service(settings, store, runner, pool=pool)
    ended: set[int] = set()
    lock = threading.Lock()

    def job_ended(job_id: int, row: Job | None) -> None:
        service.job_ended(job_id, row)  # the daemon's own hook: its reads count too
        with lock:
            ended.add(job_id)

    runner.on_finished = job_ended
    service.repos.add(RepoCreate(path=str(init_repo(tmp_path / "app")), name="app"))
    pool.start()
    runner.start()
    try:
        yield World(service, store, pool, runner, ended, lock)
    finally:
        runner.stop()
        pool.stop()
        service.intake.close()
        store.close()


def run_jobs(w: World, n: int) -> list[int]:
    ids = []
    for i in range(n):
        job = w.service.jobs.submit(JobCreate(repo="app", prompt=f"t{i}", command=["true"]))
        ids.append(job.id)

    def all_ended() -> bool:
        with w.lock:
            return w.ended.issuperset(ids)

    wait_until(all_ended, f"{n} jobs to end", timeout=60)
    return ids


class Statements:
    """SQL statements the store sends (both engines), but the transactions' own
    (``BEGIN IMMEDIATE``, PostgreSQL's writer lock)."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        self._lock = threading.Lock()
        for engine in (store._read, store._write):
            sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("BEGIN", "SELECT pg_advisory_xact_lock")):
            with self._lock:
                self.n += 1


def test_a_trivial_job_costs_a_bounded_number_of_store_transactions(world: World) -> None:
    w = world
    statements = Statements(w.store)
    run_jobs(w, 1)  # warm: the pool's first trees, the claim loop's first pass
    wait_until(lambda: w.pool.idle("app"), "a warm tree in the pool")
    before, reads = w.store.transactions.total(), w.store.transactions.reads
    sent = statements.n
    ids = run_jobs(w, JOBS)
    spent = w.store.transactions.total() - before
    read = w.store.transactions.reads - reads
    sent = statements.n - sent
    assert all(w.store.job(i).state is JobState.SUCCEEDED for i in ids)
    assert spent / JOBS <= MAX_PER_JOB, f"{spent / JOBS:.1f} store transactions per job"
    assert read / JOBS <= MAX_READS_PER_JOB, f"{read / JOBS:.1f} store reads per job"
    assert sent / JOBS <= MAX_STATEMENTS_PER_JOB, f"{sent / JOBS:.1f} SQL statements per job"


def test_the_count_is_of_sessions_read_and_written(tmp_path: Path) -> None:
    """The counter counts what it claims: a read is one, a write is one."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    st = Store(url)
    reads, writes = st.transactions.reads, st.transactions.writes
    st.repos()
    st.add_repo(Repo(name="other", path="/srv/other", default_branch="main"))
    assert (st.transactions.reads - reads, st.transactions.writes - writes) == (1, 1)
    st.close()
