"""Ownership of what a start resumes, and attempt-guarded writes (docs/cluster.md, steps 1
and 4), on a real SQLite file and a real PostgreSQL: a start re-adopts and re-queues only
its node's busy jobs (and those of no worker), takes over a dead node's exactly once even
when two starts race, leaves an alive node's alone; a worker whose job was taken over
writes nothing into the newer attempt, and its runner kills the agent and drops the job."""

from __future__ import annotations

import random
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from dispatcher import faults
from dispatcher.cluster.membership import Membership
from dispatcher.cluster.peers import Peers
from dispatcher.config import Settings
from dispatcher.jobs import takeover
from dispatcher.jobs.files import job_files
from dispatcher.jobs.runner import Runner
from dispatcher.lifecycle import JobState
from dispatcher.process import proc
from dispatcher.store.database import Store
from dispatcher.store.models import Job, JobCreate, PrAction, Repo, Worker
from dispatcher.store.owners import Guard, TakenOver
from dispatcher.store.pr_actions import PrActionStore
from dispatcher.store.team_models import Team, TeamCreate
from dispatcher.store.teams import TeamStore
from dispatcher.store.workers import WorkerStore
from tests.gitutil import init_repo
from tests.test_store import branch_for, new_job
from tests.test_store_trips import make_world
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)
LONG = timedelta(hours=1)


@pytest.fixture
def store(migrated_db_url: str) -> Iterator[Store]:
    s = Store(migrated_db_url)
    yield s
    s.close()


def _begin(rows: WorkerStore, node: str, name: str) -> int:
    w = rows.begin(
        Worker(name=name, node=node, host="h", pid=1, state_dir=f"/s/{name}",
               api_url="http://x", slots=4)
    )  # fmt: skip
    assert w.id is not None
    return w.id


def _left(store: Store, job_id: int, **fields: Any) -> None:
    """The job as a daemon left it (written as that daemon would have)."""
    with store.writing() as s:
        s.exec(sa.update(Job).where(col(Job.id) == job_id).values(**fields))


def _beating(store: Store, worker_id: int) -> None:
    """On PostgreSQL: the worker's queue worker beats now (alive)."""
    with store.writing() as s:
        qid = (
            s.connection()
            .exec_driver_sql("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
            .scalar_one()
        )
    WorkerStore(store).joined_queue(worker_id, int(qid))


def _job(store: Store, repo_id: int, **left: Any) -> int:
    job = store.add_job(new_job(repo_id), branch_for=branch_for)
    assert job.id is not None
    _left(store, job.id, **left)
    return job.id


def _sleeper() -> subprocess.Popen[bytes]:
    """An agent that runs on (in its own session, as agents do)."""
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def test_a_start_takes_its_nodes_busy_jobs_a_dead_nodes_and_leaves_an_alive_nodes(
    store: Store, tmp_path: Path
) -> None:
    postgres = store.backend.name == "postgresql"
    settings = Settings(
        state_dir=tmp_path / "state", retry_backoff_seconds=3600, worker_stopped_grace_seconds=0
    )
    settings.ensure_dirs()
    repo_path = init_repo(tmp_path / "app")
    repo = store.add_repo(Repo(name="app", path=str(repo_path), default_branch="main"))
    assert repo.id is not None
    rows = WorkerStore(store)
    mine, dead_node, alive_node = (str(uuid.uuid4()) for _ in range(3))
    earlier = _begin(rows, mine, "earlier")  # this node's start that was killed
    dead = _begin(rows, dead_node, "dead")
    rows.stopped(dead)  # (no grace for a stopped node here: the test after this one)
    alive = _begin(rows, alive_node, "alive") if postgres else None
    me = _begin(rows, mine, "me")
    if alive is not None:
        _beating(store, alive)
    agent = _sleeper()
    try:
        start = proc.process_start_time(agent.pid)
        busy = {"state": JobState.RUNNING, "max_attempts": 2}
        adopted = _job(store, repo.id, worker_id=earlier, pid=agent.pid, pid_start=start, **busy)
        lost = _job(store, repo.id, worker_id=earlier, **busy)
        unowned = _job(store, repo.id, worker_id=None, **busy)
        dead_running = _job(store, repo.id, worker_id=dead, **busy)
        dead_last = _job(store, repo.id, worker_id=dead, state=JobState.PREPARING)
        other = _job(store, repo.id, worker_id=alive, **busy) if alive is not None else None
        ended: list[int] = []
        runner = Runner(settings, store)
        runner.worker_id, runner.node = me, mine
        runner.on_finished = lambda job_id, _row: ended.append(job_id)
        taken_ended: list[int] = []  # the dead node's jobs ended here: not its end hooks
        runner.on_taken_over = taken_ended.append
        runner.start()
        try:
            got = {j: store.job(j) for j in (adopted, lost, unowned, dead_running, dead_last)}
            # Its node's live agent: re-adopted, now this start's.
            assert (got[adopted].state, got[adopted].worker_id) == (JobState.RUNNING, me)
            assert runner._guards[adopted] == Guard(me, 1)
            # Its node's lost agent and one of no worker: re-queued as before.
            for j in (lost, unowned):
                assert (got[j].state, got[j].attempt) == (JobState.QUEUED, 2)
            # The dead node's: taken over, guarded, now this start's, no worktree.
            assert (got[dead_running].state, got[dead_running].attempt) == (JobState.QUEUED, 2)
            assert got[dead_running].worker_id == me and "not alive" in (
                got[dead_running].error or ""
            )
            assert (got[dead_last].state, got[dead_last].worker_id) == (JobState.FAILED, me)
            # Ended here, it is still held by the dead node, whose clone has its branch;
            # the re-queued one is any node's.
            assert (got[dead_last].node, got[dead_running].node) == (dead_node, None)
            if postgres:
                peers = Peers(settings, Store(store.url, node=mine))
                try:
                    assert peers.node_of(got[dead_last]) == dead_node
                finally:
                    peers.store.close()
            assert taken_ended == [dead_last] and dead_last not in ended
            assert dead_running not in ended
            if other is not None:  # the alive node's: left alone
                row = store.job(other)
                assert (row.state, row.attempt, row.worker_id) == (JobState.RUNNING, 1, alive)
                assert alive not in rows.dead(mine, timedelta(seconds=30))
            assert set(rows.dead(mine, timedelta(seconds=30))) == {dead}
        finally:
            runner.stop()
    finally:
        agent.kill()
        agent.wait()


def test_each_resume_reads_its_nodes_rows_and_those_of_no_worker_or_node(store: Store) -> None:
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    rows = WorkerStore(store)
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    before_nodes = rows.begin(
        Worker(name="old", host="h", pid=1, state_dir="/s", api_url="x", slots=1)
    )
    me, other = _begin(rows, mine, "me"), _begin(rows, theirs, "other")
    ended = {
        "state": JobState.SUCCEEDED, "notice_pending": "succeeded", "head_sha": "1" * 40,
        "worktree": "/w/x",
    }  # fmt: skip
    own = {
        _job(store, repo.id, worker_id=me, **ended),
        _job(store, repo.id, worker_id=before_nodes.id, **ended),
        _job(store, repo.id, worker_id=None, **ended),
    }
    foreign = _job(store, repo.id, worker_id=other, **ended)
    queued_foreign = _job(store, repo.id, worker_id=other)  # re-queued: any node's to claim

    def ids(jobs: list[Job]) -> set[int]:
        return {j.id for j in jobs if j.id is not None}

    assert ids(store.jobs_owed_notices(mine)) == own  # Notices.resume
    assert ids(store.jobs_in([JobState.SUCCEEDED], node=mine)) == own  # Forges.resume
    assert ids(store.finished_with_commits(mine)) == own  # recover_merges' reconcile
    assert ids(store.jobs_holding_worktrees(mine)) == own | {queued_foreign}  # the sweeper
    assert ids(store.jobs_owed_notices(None)) == own | {foreign}  # no node: every row
    actions = PrActionStore(store)
    for root in (min(own), foreign):
        actions.add(PrAction(repo_id=repo.id, root_id=root, dedup_key=f"d{root}", kind="merged"))
    assert actions.open_roots(mine) == [min(own)]  # FixLoop.resume: the root job's node's
    assert actions.open_roots(None) == sorted([min(own), foreign])
    teams = TeamStore(store)
    made = {
        n: teams.add_team(
            Team(repo_id=repo.id, goal="g", base_sha="0" * 40, node=n), branch_for=str
        ).id
        for n in (mine, theirs, None)
    }
    assert {t.id for t in teams.teams(node=mine)} == {made[mine], made[None]}  # Teams.resume
    assert before_nodes.id not in rows.dead(mine, LONG)  # every node's own, never taken over


def test_on_sqlite_a_start_owns_every_row_and_on_postgresql_its_nodes(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    settings.ensure_dirs()
    membership = Membership(settings, store)
    sqlite = store.backend.name == "sqlite"
    assert membership.owner == (None if sqlite else membership.node)


def test_two_starts_racing_take_each_dead_job_over_once(
    migrated_db_url: str, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", retry_backoff_seconds=3600)
    stores = [Store(migrated_db_url) for _ in range(2)]
    try:
        store = stores[0]
        repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
        assert repo.id is not None
        rows = WorkerStore(store)
        dead = _begin(rows, str(uuid.uuid4()), "dead")
        rows.stopped(dead)
        starts = [_begin(rows, str(uuid.uuid4()), f"start{i}") for i in range(2)]
        jobs = [
            _job(store, repo.id, worker_id=dead, state=JobState.RUNNING, max_attempts=3)
            for _ in range(20)
        ]
        barrier = threading.Barrier(2)
        taken: list[list[int]] = [[], []]

        def race(i: int) -> None:
            barrier.wait()
            moved = takeover.take_over(settings, stores[i], starts[i], [dead])
            taken[i] = [t.job_id for t in moved]

        threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not set(taken[0]) & set(taken[1])
        assert sorted(taken[0] + taken[1]) == jobs
        for j in jobs:
            row = store.job(j)
            assert (row.state, row.attempt) == (JobState.QUEUED, 2)  # once: never 3
            assert row.worker_id == starts[0 if j in taken[0] else 1]
    finally:
        for s in stores:
            s.close()


def test_a_stale_take_over_does_not_touch_the_attempt_that_followed(store: Store) -> None:
    """The race the guard is for: a start read the dead worker's job, another took it over
    and it runs again (attempt 2) before the first one's write."""
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    rows = WorkerStore(store)
    dead = _begin(rows, str(uuid.uuid4()), "dead")
    job_id = _job(store, repo.id, worker_id=dead, state=JobState.RUNNING, max_attempts=3)
    stale = store.job(job_id)
    store.move(job_id, JobState.RUNNING, JobState.QUEUED, guard=Guard.of(stale), attempt=2)
    other = _begin(rows, str(uuid.uuid4()), "other")
    [claimed] = store.claim_pass(max_parallel=4, per_repo_default=4, worker_id=other).claimed
    store.advance(job_id, JobState.PREPARING, JobState.RUNNING, guard=Guard.of(claimed.job))
    with pytest.raises(TakenOver):
        store.move(job_id, {JobState.RUNNING}, JobState.QUEUED, guard=Guard.of(stale), attempt=2)
    row = store.job(job_id)
    assert (row.state, row.attempt, row.worker_id) == (JobState.RUNNING, 2, other)


def test_a_stale_worker_cannot_mark_update_or_end_the_newer_attempt(store: Store) -> None:
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    rows = WorkerStore(store)
    first, second = (_begin(rows, str(uuid.uuid4()), n) for n in ("first", "second"))
    job_id = store.add_job(new_job(repo.id), branch_for=branch_for).id
    assert job_id is not None
    [c1] = store.claim_pass(max_parallel=4, per_repo_default=4, worker_id=first).claimed
    old = Guard.of(c1.job)
    assert old == Guard(first, 1)
    # Taken over (the first worker was taken for dead) and claimed again by the second.
    store.move(job_id, JobState.PREPARING, JobState.QUEUED, guard=old, attempt=2)
    [c2] = store.claim_pass(max_parallel=4, per_repo_default=4, worker_id=second).claimed
    new = Guard.of(c2.job)
    assert new == Guard(second, 2)
    before = store.job(job_id)
    with pytest.raises(TakenOver):  # mark running
        store.advance(job_id, JobState.PREPARING, JobState.RUNNING, guard=old, pid=1)
    with pytest.raises(TakenOver):  # its notes on the row: the worktree, spawn info
        store.update(job_id, guard=old, worktree="/elsewhere", pid=1)
    with pytest.raises(TakenOver):  # fail or cancel it
        store.move(job_id, JobState.PREPARING, JobState.FAILED, guard=old, error="x")
    assert store.job(job_id).model_dump() == before.model_dump()  # nothing written
    # The holder's own writes go through; the stale end does not.
    assert not store.advance(job_id, JobState.PREPARING, JobState.RUNNING, guard=new, pid=2)
    with pytest.raises(TakenOver):
        store.advance(job_id, JobState.RUNNING, JobState.SUCCEEDED, guard=old, exit_code=0)
    # A worker of the same attempt number but another id is stale too.
    with pytest.raises(TakenOver):
        store.advance(job_id, JobState.RUNNING, JobState.SUCCEEDED, guard=Guard(first, 2))
    assert store.job(job_id).state is JobState.RUNNING
    store.advance(job_id, JobState.RUNNING, JobState.SUCCEEDED, guard=new, exit_code=0)
    assert store.job(job_id).state is JobState.SUCCEEDED


def _taken_over_and_run_elsewhere(store: Store, job_id: int, state: JobState) -> int:
    """Another node takes the job over (attempt 2, re-queued) and another worker claims it
    and has it in ``state`` again, as this runner's stale claim had it; that worker's id."""
    row = store.job(job_id)
    store.move(
        job_id, state, JobState.QUEUED, guard=Guard.of(row), attempt=row.attempt + 1,
        worker_id=None, pid=None, pid_start=None,
    )  # fmt: skip
    other = _begin(WorkerStore(store), str(uuid.uuid4()), "other")
    _left(store, job_id, state=state, worker_id=other)  # as its claim (and run) wrote it
    return other


def test_the_runner_kills_the_agent_of_a_job_taken_over_while_it_started(
    tmp_path: Path, migrated_db_url: str
) -> None:
    holds = tmp_path / "faults"
    holds.mkdir()
    seconds = str(random.randint(10**6, 10**7))  # the agent's own argv, found in /proc
    (holds / "runner.after-spawn.hold").touch()
    faults.configure(holds)
    try:
        with make_world(tmp_path, database_url=migrated_db_url) as w:
            cmd = ["sh", "-c", f"exec sleep {seconds}"]
            job = w.service.jobs.submit(JobCreate(repo="app", prompt="p", command=cmd))
            assert job.id is not None
            wait_until(lambda: (holds / "runner.after-spawn.reached").exists(), "the spawn", 60)
            wait_until(lambda: _running(seconds), "the agent to run", 30)
            other = _taken_over_and_run_elsewhere(w.store, job.id, JobState.PREPARING)
            (holds / "runner.after-spawn.hold").unlink()
            wait_until(lambda: job.id not in w.runner._active, "the runner to let go", 30)
            wait_until(lambda: not _running(seconds), "the agent to be killed", 30)
            row = w.store.job(job.id)
            assert (row.state, row.attempt, row.worker_id, row.pid, row.worktree) == (
                JobState.PREPARING, 2, other, None, None,
            )  # fmt: skip
            assert job.id not in w.ended  # dropped: no hook
            # Its worktree is left as it is (the branch is not the dropped worker's to undo).
            assert (w.runner.settings.worktrees_dir / "app" / str(job.id)).is_dir()
    finally:
        faults.configure(None)


def test_a_job_taken_over_while_its_agent_ran_is_not_ended_by_the_stale_runner(
    tmp_path: Path, migrated_db_url: str
) -> None:
    go = tmp_path / "go"
    with make_world(tmp_path, database_url=migrated_db_url) as w:
        cmd = ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"]
        job = w.service.jobs.submit(JobCreate(repo="app", prompt="p", command=cmd))
        assert job.id is not None
        wait_until(lambda: w.store.job(job.id).state is JobState.RUNNING, "running", 60)
        other = _taken_over_and_run_elsewhere(w.store, job.id, JobState.RUNNING)
        go.touch()
        wait_until(lambda: job.id not in w.runner._active, "the runner to let go", 60)
        row = w.store.job(job.id)
        assert (row.state, row.attempt, row.worker_id, row.exit_code, row.finished_at) == (
            JobState.RUNNING, 2, other, None, None,
        )  # fmt: skip
        assert job.id not in w.ended


def _running(seconds: str) -> bool:
    """Is a ``sleep <seconds>`` running (not a zombie)? The agent may run in a sandbox's
    pid namespace: it is found by its argv."""
    wanted = f"sleep\0{seconds}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != wanted:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(") ", 1)[-1].split()[0] != "Z":
            return True
    return False


def test_on_postgresql_a_worker_that_never_joined_the_queue_is_dead_after_the_timeout(
    store: Store,
) -> None:
    rows = WorkerStore(store)
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    joining = _begin(rows, theirs, "joining")  # its queue worker never registered
    me = _begin(rows, mine, "me")
    if store.backend.name == "sqlite":  # one daemon: this start, the other marked stopped
        assert [w.id for w in rows.listed(this=me, timeout=LONG)] == [me]
        return
    assert joining not in rows.dead(mine, LONG)  # still joining, for the timeout
    [listed] = [w for w in rows.listed(this=me, timeout=LONG) if w.id == joining]
    assert listed.alive
    assert rows.dead(mine, timedelta(0)) == [joining]  # past it: taken for dead


def test_a_team_records_the_node_that_made_it(tmp_path: Path) -> None:
    with make_world(tmp_path) as w:
        w.service.teams.node = node = str(uuid.uuid4())
        made = w.service.teams.create(TeamCreate(repo="app", goal="g", lead_command=["true"]))
        rows = TeamStore(w.store)
        assert rows.team(made.id).node == node
        assert [t.id for t in rows.teams(node=node)] == [made.id]
        assert rows.teams(node=str(uuid.uuid4())) == []  # another node's start resumes none


def test_after_an_outage_a_job_taken_over_meanwhile_is_dropped_not_recovered(
    store: Store, tmp_path: Path
) -> None:
    """The database went away in the middle of a job's step and, while it was away,
    another worker took the job over (a newer attempt, queued or claimed). Taking the job
    up again must not touch the newer attempt: the runner drops it, kills its agent."""
    settings = Settings(state_dir=tmp_path / "state", retry_backoff_seconds=0)
    settings.ensure_dirs()
    repo = store.add_repo(Repo(name="app", path=str(init_repo(tmp_path / "app")),
                               default_branch="main"))  # fmt: skip
    assert repo.id is not None
    rows = WorkerStore(store)
    me, other = _begin(rows, str(uuid.uuid4()), "me"), _begin(rows, str(uuid.uuid4()), "other")
    agent = _sleeper()
    try:
        start = proc.process_start_time(agent.pid)
        job_id = _job(store, repo.id, state=JobState.RUNNING, worker_id=me, pid=agent.pid,
                      pid_start=start, max_attempts=2)  # fmt: skip
        runner = Runner(settings, store)
        runner.worker_id = me
        ended: list[int] = []
        runner.on_finished = lambda job_id, _row: ended.append(job_id)
        runner._hold(job_id, Guard(me, 1))
        exit_file = job_files(settings, job_id).exit
        runner._children[job_id] = proc.Spawned(agent.pid, start or 0, exit_file, None, None)
        # Taken over while the database was away: attempt 2, queued for another worker.
        _left(store, job_id, state=JobState.QUEUED, worker_id=other, attempt=2, pid=None,
              pid_start=None)  # fmt: skip
        gone = sa.exc.OperationalError("UPDATE job", {}, Exception("server closed the connection"))
        assert runner._recover_after_outage(job_id, gone) is False
        row = store.job(job_id)
        assert (row.state, row.attempt, row.worker_id) == (JobState.QUEUED, 2, other)
        agent.wait(timeout=30)  # killed: the newer attempt is the job now
        runner._let_go(job_id)
        assert ended == []  # dropped: no end announced for another worker's attempt
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait()


def test_a_node_that_stopped_cleanly_keeps_its_jobs_for_the_grace_then_is_taken_for_dead(
    pg_migrated_url: str,
) -> None:
    """A clean stop leaves the agents running for the node's next start: within
    ``DISPATCHER_WORKER_STOPPED_GRACE_SECONDS`` its jobs are its own; after it, another
    node takes them over. A killed node's (never stopped) wait only for the timeout.
    (PostgreSQL: nodes share it; on SQLite there are no other nodes.)"""
    store = Store(pg_migrated_url)
    try:
        _stopped_node(store)
    finally:
        store.close()


def _stopped_node(store: Store) -> None:
    rows = WorkerStore(store)
    mine = str(uuid.uuid4())
    stopped, killed = (
        _begin(rows, str(uuid.uuid4()), "stopped"),
        _begin(rows, str(uuid.uuid4()), "killed"),
    )
    rows.stopped(stopped)
    grace = timedelta(minutes=10)
    assert rows.dead(mine, timedelta(0), grace) == [killed]
    _stopped_ago(store, stopped, timedelta(minutes=11))
    assert sorted(rows.dead(mine, timedelta(0), grace)) == sorted([stopped, killed])


def _stopped_ago(store: Store, worker_id: int, ago: timedelta) -> None:
    from dispatcher.store.models import utcnow

    with store.writing() as s:
        s.exec(
            sa.update(Worker).where(col(Worker.id) == worker_id).values(stopped_at=utcnow() - ago)
        )
