"""Workers end to end (docs/cluster.md): the real daemon records its start as a worker,
stamps the jobs it claims with it, lists itself (``GET /workers``, ``dispatcher workers``);
a killed daemon's row is marked stopped by the next start; on PostgreSQL its queue worker
beats, and once killed its heartbeat goes stale; a killed node's running job is taken over
by another node's start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.store.database import Store
from dispatcher.store.models import Job, Worker, utcnow
from dispatcher.store.workers import WorkerStore
from tests.daemon_fixture import Daemon
from tests.e2e.test_postgres import FIRST_START_S
from tests.gitutil import git
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(300)


def _run(d: Daemon, repo: str) -> dict[str, object]:
    out = d.cli("run", repo, "--prompt", "p", "--command", "sh -c 'echo x > X'", "--wait")
    return d.job(int(out.stdout.strip()))


def test_a_daemon_is_a_worker_its_jobs_carry_it_and_a_killed_one_is_marked_stopped(
    daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    d = daemon_factory(DISPATCHER_WORKER_NAME="laptop").start()
    name = d.add_repo(repo, "app")
    [me] = d.api.get("/workers").json()
    assert (me["name"], me["alive"], me["this"], me["slots"]) == ("laptop", True, True, 4)
    assert me["state_dir"] == str(d.state_dir) and me["heartbeat_at"] is None  # SQLite
    assert _run(d, name)["worker_id"] == me["id"]
    text = d.cli("workers").stdout.splitlines()
    assert "laptop *" in text[1] and "alive" in text[1]

    d.stop(signal.SIGKILL)
    d.start()
    rows = json.loads(d.cli("workers", "--all", "--json").stdout)
    assert [(w["id"] > me["id"], w["alive"], w["this"]) for w in rows] == [
        (True, True, True), (False, False, False)
    ]  # fmt: skip
    assert rows[1]["stopped_at"] is not None and "stopped" in d.cli("workers", "--all").stdout
    # Both starts are one node (the state dir's node id), kept in the state dir.
    assert rows[0]["node"] == rows[1]["node"] == (d.state_dir / "node-id").read_text().strip()
    assert d.api.get(f"/workers/{me['id']}").json()["alive"] is False
    missing = d.api.get("/workers/99999")
    assert (missing.status_code, missing.json()["error"]["message"]) == (
        404,
        "no worker with id 99999",
    )
    assert d.api.get("/workers/0").status_code == 422
    assert d.stop() == 0
    stopped = Store(f"sqlite:///{d.state_dir}/dispatcher.db")
    try:
        assert WorkerStore(stopped).listed(this=None, timeout=timedelta(hours=1)) == []
    finally:
        stopped.close()


def test_on_postgresql_the_worker_beats_and_a_killed_one_goes_silent(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    d = daemon_factory(
        DISPATCHER_DATABASE_URL=pg_url, DISPATCHER_WORKER_HEARTBEAT_SECONDS="0.3",
        DISPATCHER_WORKER_TIMEOUT_SECONDS="1.5",
    ).start(timeout=FIRST_START_S)  # fmt: skip
    name = d.add_repo(repo, "app")

    def me() -> dict[str, object]:
        [row] = d.api.get("/workers").json()
        return dict(row)

    first = me()
    assert first["alive"] and first["heartbeat_at"] is not None
    wait_until(lambda: me()["heartbeat_at"] != first["heartbeat_at"], "a heartbeat", 20)
    assert _run(d, name)["worker_id"] == first["id"]
    assert "alive" in d.cli("workers").stdout

    d.stop(signal.SIGKILL)
    store = Store(pg_url)
    try:
        rows = WorkerStore(store)
        timeout = timedelta(seconds=1.5)
        wait_until(lambda: not rows.listed(this=None, timeout=timeout)[0].alive, "silence", 20)
        [silent] = rows.listed(this=None, timeout=timeout)
        assert silent.id == first["id"] and silent.stopped_at is None
    finally:
        store.close()
    d.start(timeout=FIRST_START_S)
    rows_now = d.api.get("/workers", params={"all": "true"}).json()
    assert [(w["alive"], w["this"]) for w in rows_now] == [(True, True), (False, False)]
    assert d.stop() == 0


def test_on_postgresql_a_dead_nodes_running_job_is_taken_over_by_the_next_node_to_start(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    """Two state dirs (two nodes) on one PostgreSQL, one after the other (the database's
    lock still keeps one daemon at a time): the first is killed while its job runs; once
    its heartbeat is stale, the second takes the job over (attempt 2) and runs it."""
    env = {
        "DISPATCHER_DATABASE_URL": pg_url, "DISPATCHER_WORKER_HEARTBEAT_SECONDS": "0.3",
        "DISPATCHER_WORKER_TIMEOUT_SECONDS": "1.5", "DISPATCHER_MAX_ATTEMPTS": "2",
        "DISPATCHER_RETRY_BACKOFF_SECONDS": "0",
    }  # fmt: skip
    # One repo, a clone of it on each node (matched by their remote: a bare hub).
    hub = repo.parent / "hub.git"
    git(repo.parent, "clone", "-q", "--bare", str(repo), str(hub))
    git(repo, "remote", "add", "origin", str(hub))
    other_clone = repo.parent / "app-b"
    git(repo.parent, "clone", "-q", str(hub), str(other_clone))
    a = daemon_factory(**env).start(timeout=FIRST_START_S)
    name = a.add_repo(repo, "app")
    # On the first node it runs on, until that node dies; on any other it is done.
    script = f'case "$DISPATCHER_WORKTREE" in {a.state_dir}/*) exec sleep 600;; esac; echo 2 > X'
    job_id = int(a.cli("run", name, "--prompt", "p", "--command", f"sh -c '{script}'").stdout)
    first = wait_until(
        lambda: (j := a.job(job_id))["state"] == "running" and j, "the job to run", 60
    )
    assert first["attempt"] == 1
    a.stop(signal.SIGKILL)
    # Its machine goes with it: its agent too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(first["pid"], signal.SIGKILL)
    store = Store(pg_url)
    try:
        rows = WorkerStore(store)
        timeout = timedelta(seconds=1.5)
        wait_until(
            lambda: not any(w.alive for w in rows.listed(this=None, timeout=timeout)),
            "the first node's heartbeat to go stale", 20,
        )  # fmt: skip
    finally:
        store.close()
    b = daemon_factory(**env).start(timeout=FIRST_START_S)
    assert b.add_repo(other_clone, "app") == name  # its own clone of the same repo
    done = wait_until(
        lambda: (j := b.job(job_id))["state"] not in ("queued", "preparing", "running") and j,
        "the job to end on the second node", 90,
    )  # fmt: skip
    assert (done["state"], done["attempt"]) == ("succeeded", 2), done
    log = b.cli("logs", str(job_id)).stdout
    assert f"taken over from worker {first['worker_id']} (its node is not alive): queued" in log
    # The dead node's row is left as it is: silent, not marked stopped by another node.
    listed = {w["id"]: w for w in b.api.get("/workers").json()}
    [me] = [w for w in listed.values() if w["this"]]
    dead = listed[first["worker_id"]]
    assert done["worker_id"] == me["id"] and me["node"] != dead["node"]
    assert (dead["alive"], dead["stopped_at"]) == (False, None)
    assert b.stop() == 0


def test_on_postgresql_a_node_that_dies_while_another_runs_has_its_job_taken_over(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    """Take-over at run time: a node dies (its worker stops beating) while this one runs;
    within a heartbeat interval after its timeout, this node re-queues its busy job
    (attempt 2) and, having a clone of the repo, runs it."""
    d = daemon_factory(
        DISPATCHER_DATABASE_URL=pg_url, DISPATCHER_WORKER_HEARTBEAT_SECONDS="0.3",
        DISPATCHER_WORKER_TIMEOUT_SECONDS="1.5", DISPATCHER_MAX_ATTEMPTS="2",
        DISPATCHER_RETRY_BACKOFF_SECONDS="0",
    ).start(timeout=FIRST_START_S)  # fmt: skip
    name = d.add_repo(repo, "app")
    template = _run(d, name)  # a job as this daemon makes them, to copy
    store = Store(pg_url)
    try:
        # The other node: a worker of its own node, which never beats (it has died).
        gone = WorkerStore(store).begin(Worker(
            name="elsewhere", node=str(uuid.uuid4()), host="elsewhere", pid=1,
            state_dir="/elsewhere", api_url="http://elsewhere:8765", slots=1,
        ))  # fmt: skip
        row = store.job(int(str(template["id"])))
        job = Job(
            repo_id=row.repo_id, prompt="ran elsewhere", agent=row.agent, command=row.command,
            profile=row.profile, base_ref=row.base_ref, base_sha=row.base_sha,
            target_branch=row.target_branch, timeout_s=row.timeout_s,
            max_attempts=row.max_attempts, not_before=utcnow() + timedelta(hours=1),
        )  # fmt: skip
        job_id = store.add_job(job, branch_for=lambda jid: f"dispatcher/{jid}-elsewhere").id
        with store.connecting() as conn:  # running on the other node, as its claim left it
            conn.execute(
                sa.text("UPDATE job SET state = 'running', worker_id = :w, not_before = NULL, "
                        "started_at = :now WHERE id = :id"),
                {"w": gone.id, "id": job_id, "now": utcnow()},
            )  # fmt: skip
    finally:
        store.close()
    done = d.wait(int(job_id or 0), timeout=60)
    assert (done["state"], done["attempt"]) == ("succeeded", 2), done
    mine = next(w for w in d.api.get("/workers").json() if w["this"])
    assert done["worker_id"] == mine["id"]
    log = d.cli("logs", str(job_id)).stdout
    assert f"taken over from worker {gone.id} (its node is not alive): queued" in log
    assert d.stop() == 0
