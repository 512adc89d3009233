"""End to end on PostgreSQL: the real daemon with ``DISPATCHER_DATABASE_URL`` naming a
database of the test's PostgreSQL (tests/pg.py) migrates it, runs a job through to a
commit on its branch, keeps every row there (no SQLite file), and takes the database for
itself: a second daemon, with a state dir of its own, is refused in one line."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.daemon_fixture import Daemon
from tests.daemonproc import dispatcher_argv
from tests.e2e.test_supervision import Agent, gate_agent
from tests.gitutil import git, init_repo
from tests.migrationutil import head_revision

# A first start migrates an empty PostgreSQL database (1.5 s on a quiet machine): more
# than the usual 30 s can pass on a loaded one.
FIRST_START_S = 120
# The session's PostgreSQL may start inside the first of these (initdb: 10 s or more).
pytestmark = pytest.mark.timeout(300)


def test_a_daemon_on_postgresql_runs_a_job_and_keeps_its_rows_there(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path
) -> None:
    # pg_url first: its database is dropped after the daemons are stopped.
    d = daemon_factory(DISPATCHER_DATABASE_URL=pg_url).start(timeout=FIRST_START_S)
    name = d.add_repo(repo, "app")
    out = d.cli(
        "run", name, "--prompt", "note it", "--command", "sh -c 'echo done > NOTE.md'", "--wait"
    )
    job_id = int(out.stdout.strip())
    shown = json.loads(d.cli("show", str(job_id), "--json").stdout)
    assert (shown["state"], shown["exit_code"], shown["commits_ahead"]) == ("succeeded", 0, 1)
    assert git(repo, "show", f"{shown['branch']}:NOTE.md") == "done"
    assert not (d.state_dir / "dispatcher.db").exists()
    assert "database postgresql+psycopg://postgres@/" in d.log_path.read_text()

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                (head_revision(),)
            ]
            rows = conn.exec_driver_sql("SELECT id, state, branch FROM job").all()
            assert [tuple(r) for r in rows] == [(job_id, "succeeded", shown["branch"])]
    finally:
        engine.dispose()

    second = daemon_factory(DISPATCHER_DATABASE_URL=pg_url)
    second.state_dir.mkdir(parents=True)
    proc = subprocess.run(
        [*dispatcher_argv(), "serve", "--port", str(second.port), "--state-dir",
         str(second.state_dir)],
        env=second.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert "another daemon is already using the database postgresql+psycopg://" in lines[-1]
    assert len([ln for ln in lines if "Traceback" in ln]) == 0, proc.stderr
    # The first daemon goes on, and stops cleanly.
    assert d.job(job_id)["state"] == "succeeded"
    assert d.stop() == 0


def test_kill_9_of_a_daemon_on_postgresql_then_restart_readopts_its_running_agent(
    pg_url: str, daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """The crash guarantee on PostgreSQL: the killed daemon's hold on the database goes
    with its connection, so the restarted one starts, re-adopts the agent and ends the
    job once; nothing duplicated."""
    d = daemon_factory(DISPATCHER_DATABASE_URL=pg_url).start(timeout=FIRST_START_S)
    gates = tmp_path / "gates"
    repo = init_repo(tmp_path / "r")
    running = d.submit(d.add_repo(repo), "long", command=[gate_agent(agent, gates)])["id"]
    d.wait(running, {"running"})
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    (gates / f"go-{running}").touch()
    d.start(timeout=FIRST_START_S)
    job = d.wait(running)
    assert (job["state"], job["exit_code"]) == ("succeeded", 0), job
    assert git(repo, "show", f"{job['branch']}:done.txt") == str(running)
    assert "daemon restarted" in d.api.get(f"/jobs/{running}/log").text
    assert [j["id"] for j in d.api.get("/jobs").json()["items"]] == [running]
