"""Workers (dispatcher/store/workers.py, dispatcher/cluster/): a daemon start's row on both
databases, the claim's worker id, and on a real PostgreSQL the queue worker
(procrastinate's): it registers, beats, comes back after the database restarts, and a
silent one is taken for dead."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.cluster.node import node_id
from dispatcher.cluster.queue import QueueWorker
from dispatcher.errors import DispatcherError, NotFound
from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Repo, Worker
from dispatcher.store.repochanges import APPLICATION_NAME
from dispatcher.store.workers import WorkerStore
from tests.pg import PgCluster
from tests.test_store import branch_for, new_job
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)
LONG = timedelta(hours=1)


def _worker(name: str = "w") -> Worker:
    return Worker(name=name, host="h", pid=1, state_dir="/s", api_url="http://x", slots=4)


@pytest.fixture
def store(migrated_db_url: str) -> Store:
    s = Store(migrated_db_url)
    yield s
    s.close()


def test_a_start_marks_the_workers_left_running_stopped_and_lists_itself_alive(
    store: Store,
) -> None:
    rows = WorkerStore(store)
    first = rows.begin(_worker("first"))
    assert first.id is not None
    killed = {w.id: w for w in rows.listed(this=None, timeout=LONG)}
    assert killed[first.id].alive and not killed[first.id].this
    second = rows.begin(_worker("second"))  # the first was killed: never marked stopped
    assert second.id is not None
    running = rows.listed(this=second.id, timeout=LONG)
    assert [(w.id, w.alive, w.this) for w in running] == [(second.id, True, True)]
    every = rows.listed(this=second.id, timeout=LONG, everyone=True)
    assert [w.id for w in every] == [second.id, first.id]  # newest first
    assert every[1].stopped_at is not None and not every[1].alive
    rows.stopped(second.id)
    assert rows.listed(this=second.id, timeout=LONG) == []
    assert rows.get(first.id).name == "first"
    with pytest.raises(NotFound, match="no worker with id 999"):
        rows.get(999)


def test_the_claim_writes_the_claiming_worker_and_the_list_counts_its_jobs(
    store: Store,
) -> None:
    worker = WorkerStore(store).begin(_worker())
    assert worker.id is not None
    repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
    assert repo.id is not None
    for prompt in ("a", "b"):
        store.add_job(new_job(repo.id, prompt), branch_for=branch_for)
    claimed = store.claim_pass(
        max_parallel=1, per_repo_default=2, worker_id=worker.id
    ).claimed  # fmt: skip
    assert [c.job.worker_id for c in claimed] == [worker.id]
    assert store.job(claimed[0].job.id or 0).worker_id == worker.id
    listed = WorkerStore(store).listed(this=worker.id, timeout=LONG)
    assert listed[0].running == 1
    # A claim by no worker (a runner without a daemon) leaves the column alone.
    left = store.claim_pass(max_parallel=2, per_repo_default=2).claimed
    assert [c.job.worker_id for c in left] == [None]
    assert store.job(claimed[0].job.id or 0).state == JobState.PREPARING


# ---------------------------------------------------------------- PostgreSQL's queue worker


def _conninfo(store: Store) -> str:
    info = store.backend.queue_conninfo()
    assert info is not None
    return info


def _beats(url: str) -> dict[int, object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, last_heartbeat FROM procrastinate_workers")
            return {int(i): at for i, at in rows}
    finally:
        engine.dispose()


def test_a_node_id_is_kept_per_state_dir_and_a_broken_one_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "a" / "node-id", tmp_path / "b" / "node-id"
    first.parent.mkdir()
    second.parent.mkdir()
    made = node_id(first)
    assert str(uuid.UUID(made)) == made and first.read_text() == made + "\n"
    assert node_id(first) == made  # the next start of the same state dir
    assert node_id(second) != made  # another state dir is another node
    first.write_text("not-a-uuid\n")
    with pytest.raises(DispatcherError) as err:
        node_id(first)
    assert "does not hold a node id" in str(err.value) and "\n" not in str(err.value)
    assert first.read_text() == "not-a-uuid\n"  # left for the user to restore


def test_sqlite_has_no_queue(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        assert store.backend.queue_conninfo() is None
    finally:
        store.close()


def test_the_queue_worker_registers_beats_and_is_taken_for_dead_when_silent(
    pg_migrated_url: str,
) -> None:
    store = Store(pg_migrated_url)
    rows = WorkerStore(store)
    me = rows.begin(_worker())
    assert me.id is not None
    worker_id = me.id
    queue = QueueWorker(
        _conninfo(store), name="w#1", heartbeat_s=0.2, timeout_s=0.6,
        on_registered=lambda qid: rows.joined_queue(worker_id, qid),
    )  # fmt: skip
    try:
        qid = queue.start()
        assert rows.get(worker_id).queue_worker_id == qid
        first = _beats(pg_migrated_url)[qid]
        wait_until(lambda: _beats(pg_migrated_url).get(qid, first) != first, "a heartbeat", 10)
        shown = rows.listed(this=worker_id, timeout=timedelta(seconds=0.6))
        assert shown[0].alive and shown[0].heartbeat_at is not None
    finally:
        queue.stop()
    # Stopped cleanly it unregisters; a silent one (its row left, as kill -9 leaves it)
    # is alive only while its last heartbeat is within the timeout.
    assert qid not in _beats(pg_migrated_url)
    with store.connecting() as conn:
        conn.exec_driver_sql(
            "INSERT INTO procrastinate_workers (id, last_heartbeat) OVERRIDING SYSTEM VALUE "
            f"VALUES ({qid}, NOW() - INTERVAL '5 seconds')"
        )
    shown = rows.listed(this=None, timeout=timedelta(seconds=1))
    assert (shown[0].id, shown[0].alive) == (worker_id, False)
    assert rows.listed(this=None, timeout=timedelta(seconds=60))[0].alive
    store.close()


def test_the_queue_worker_beats_on_after_postgresql_restarts_and_joins_again_if_pruned(
    pg_cluster: PgCluster, pg_migrated_url: str
) -> None:
    store = Store(pg_migrated_url)
    ids: list[int] = []
    again = threading.Event()

    def registered(qid: int) -> None:
        ids.append(qid)
        again.set()

    queue = QueueWorker(
        _conninfo(store), name="w#1", heartbeat_s=0.2, timeout_s=5, on_registered=registered
    )
    try:
        queue.start()
        # Every connection dropped, and the test server's unsynced last commits may be
        # lost with it (synchronous_commit=off): the worker beats on, under its id or,
        # if its row was lost, a new one.
        pg_cluster.restart()

        def beating() -> bool:
            qid = queue.queue_worker_id
            beats = _beats(pg_migrated_url)
            return qid in beats and beats[qid] != seen.setdefault(qid, beats[qid])

        seen: dict[int | None, object] = {}
        wait_until(beating, "a heartbeat after the restart", 30)
        # Taken for dead by another node (its row pruned): it joins again, a new id.
        again.clear()
        ids.clear()
        pruned = queue.queue_worker_id
        with store.connecting() as conn:
            conn.exec_driver_sql(f"DELETE FROM procrastinate_workers WHERE id = {pruned}")
        assert again.wait(30), "the queue worker did not join again"
        assert ids[-1] != pruned and queue.queue_worker_id == ids[-1]
        wait_until(lambda: ids[-1] in _beats(pg_migrated_url), "its new row", 10)
    finally:
        queue.stop()
        store.close()


def test_a_job_queued_by_any_node_wakes_this_node_even_after_postgresql_restarts(
    pg_cluster: PgCluster, pg_migrated_url: str
) -> None:
    other = Store(pg_migrated_url)  # another node's store: the job is queued there
    me = Store(pg_migrated_url, node=str(uuid.uuid4()))  # this node's: it listens
    repo = other.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
    assert repo.id is not None
    woken = threading.Event()

    def queue_one(prompt: str) -> int:
        return other.add_job(new_job(repo.id or 0, prompt), branch_for=branch_for).id or 0

    def set_state(job_id: int, state: JobState) -> None:
        with other.connecting() as conn:
            conn.execute(sa.text("UPDATE job SET state = :s WHERE id = :id"),
                         {"s": state.value, "id": job_id})  # fmt: skip

    def quiet() -> bool:  # every wake-up sent so far has arrived
        woken.clear()
        return not woken.wait(0.3)

    def listening_anew() -> bool:  # its connection on the (new) server, LISTEN in place
        with other.connecting() as conn:
            here = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": APPLICATION_NAME},
            ).scalar()  # fmt: skip
        return bool(here) and changes.listening.is_set()

    try:
        changes = me.hear_repo_changes(queued=woken.set)
        assert changes is not None
        wait_until(listening_anew, "the listener", 15)
        wait_until(quiet, "the wake-ups to stop", 10)  # it wakes once as it starts
        queue_one("new")
        assert woken.wait(10), "a new job woke nobody"
        job_id = queue_one("more")
        assert woken.wait(10)
        wait_until(quiet, "the wake-ups to stop", 10)
        set_state(job_id, JobState.PREPARING)  # claimed: nothing to wake anyone for
        assert not woken.wait(0.5)
        set_state(job_id, JobState.QUEUED)  # put back (a retry, a lost run re-queued)
        assert woken.wait(10), "a job put back in the queue woke nobody"

        pg_cluster.restart()  # the listener's connection is dropped: it listens again
        wait_until(listening_anew, "the listener after the restart", 30)
        wait_until(quiet, "the wake-ups to stop", 10)
        queue_one("after restart")
        assert woken.wait(10), "a job queued after the restart woke nobody"
    finally:
        me.close()
        other.close()


def test_a_queue_that_cannot_be_reached_is_refused_in_one_line(tmp_path: Path) -> None:
    queue = QueueWorker(
        f"postgresql:///nowhere?host={tmp_path}&connect_timeout=1", name="w", heartbeat_s=1,
        timeout_s=3, on_registered=lambda _qid: None,
    )  # fmt: skip
    with pytest.raises(DispatcherError, match="the job queue's worker did not start") as info:
        queue.start(timeout=20)
    assert "\n" not in str(info.value)


def test_a_queue_that_never_answers_is_refused_in_one_line_after_the_pool_gives_up(
    tmp_path: Path,
) -> None:
    """The daemon's own wait (60 s) outlasts procrastinate's pool (30 s): the worker's
    thread has ended and closed its loop before start() gives up."""
    queue = QueueWorker(
        f"postgresql:///nowhere?host={tmp_path}&connect_timeout=1", name="w", heartbeat_s=1,
        timeout_s=3, on_registered=lambda _qid: None,
    )  # fmt: skip
    with pytest.raises(DispatcherError) as info:
        queue.start()
    message = str(info.value)
    assert message.startswith("the job queue's worker did not start: ") and "\n" not in message
    assert "Event loop is closed" not in message
