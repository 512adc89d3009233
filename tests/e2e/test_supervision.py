"""Private daemons: parallelism limits, FIFO, kill -9 and restart, one daemon per state dir."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_fixture import Daemon, dispatcher_argv
from tests.gitutil import git, init_repo

Agent = Callable[[str, str], str]


def gate_agent(agent: Agent, gates: Path) -> str:
    """An agent that records it started, then waits until its job's gate file exists."""
    gates.mkdir(exist_ok=True)
    return agent(
        "gate.sh",
        f'touch "{gates}/started-$DISPATCHER_JOB_ID"\n'
        f'while [ ! -f "{gates}/go-$DISPATCHER_JOB_ID" ]; do sleep 0.02; done\n'
        'echo "$DISPATCHER_JOB_ID" > done.txt\n',
    )


def gated_running_job(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path, **env: str
) -> tuple[Daemon, Path, int, Path]:
    """A private daemon with one gated job running: (daemon, gates dir, job id, repo)."""
    d = daemon_factory(**env).start()
    gates = tmp_path / "gates"
    script = gate_agent(agent, gates)
    repo = init_repo(tmp_path / "r")
    job_id = d.submit(d.add_repo(repo), "long", command=[script])["id"]
    d.wait(job_id, {"running"})
    return d, gates, job_id, repo


def test_per_repo_limit_queues_fifo_and_other_repos_still_run(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_MAX_PARALLEL="3", DISPATCHER_MAX_PARALLEL_PER_REPO="1").start()
    gates = tmp_path / "gates"
    script = gate_agent(agent, gates)
    a = d.add_repo(init_repo(tmp_path / "a"), "a")
    b = d.add_repo(init_repo(tmp_path / "b"), "b")
    a1, a2, a3 = (d.submit(a, f"a{i}", command=[script])["id"] for i in range(3))
    b1 = d.submit(b, "b1", command=[script])["id"]
    d.wait(a1, {"running"})
    d.wait(b1, {"running"})  # repo b is not blocked behind repo a's queue
    assert d.job(a2)["state"] == "queued"
    assert d.job(a3)["state"] == "queued"
    (gates / f"go-{a1}").touch()
    d.wait(a1)
    d.wait(a2, {"running"})  # FIFO: a2 before a3
    assert d.job(a3)["state"] == "queued"
    for job_id in (a2, a3, b1):
        (gates / f"go-{job_id}").touch()
    for job_id in (a2, a3, b1):
        assert d.wait(job_id)["state"] == "succeeded"


def test_global_limit(daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path) -> None:
    d = daemon_factory(DISPATCHER_MAX_PARALLEL="2", DISPATCHER_MAX_PARALLEL_PER_REPO="5").start()
    gates = tmp_path / "gates"
    script = gate_agent(agent, gates)
    name = d.add_repo(init_repo(tmp_path / "r"))
    ids = [d.submit(name, f"j{i}", command=[script])["id"] for i in range(4)]
    d.wait(ids[0], {"running"})
    d.wait(ids[1], {"running"})
    assert [d.job(i)["state"] for i in ids[2:]] == ["queued", "queued"]
    for job_id in ids:
        (gates / f"go-{job_id}").touch()
    assert all(d.wait(i)["state"] == "succeeded" for i in ids)


def test_kill_9_daemon_then_restart_readopts_running_agent(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d, gates, running, repo = gated_running_job(daemon_factory, agent, tmp_path)
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    # The agent lives on in its own session while the daemon is down; then it finishes.
    (gates / f"go-{running}").touch()
    d.start()
    job = d.wait(running)
    assert job["state"] == "succeeded", job
    assert job["exit_code"] == 0
    assert git(repo, "show", f"{job['branch']}:done.txt") == str(running)
    log = d.api.get(f"/jobs/{running}/log").text
    assert "daemon restarted" in log
    # Exactly one job, one worktree: nothing duplicated or orphaned.
    assert [j["id"] for j in d.api.get("/jobs").json()["items"]] == [running]
    assert len(git(repo, "worktree", "list").splitlines()) == 2


def test_kill_9_daemon_agent_still_running_is_supervised_after_restart(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d, _, job_id, _ = gated_running_job(daemon_factory, agent, tmp_path)
    d.stop(signal.SIGKILL)
    d.start()
    assert d.job(job_id)["state"] == "running"  # re-adopted, not lost
    resp = d.api.post(f"/jobs/{job_id}/cancel")  # and still controllable
    assert resp.status_code == 200
    job = d.wait(job_id)
    assert job["state"] == "canceled"


def test_agent_that_died_while_daemon_was_down_is_failed_not_stuck(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    # No attempts left (a lost agent with attempts left is re-queued: test_faults.py).
    d, _, job_id, _ = gated_running_job(
        daemon_factory, agent, tmp_path, DISPATCHER_MAX_ATTEMPTS="1"
    )
    pid = d.agent_group(job_id)
    d.stop(signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)  # the agent's whole group (it leads its own session)
    d.start()
    job = d.wait(job_id)
    assert job["state"] == "failed"
    assert job["error"]


def test_second_daemon_on_same_state_dir_is_refused(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory().start()
    result = subprocess.run(
        [*dispatcher_argv(), "serve", "--port", "0", "--state-dir", str(d.state_dir)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "already using" in result.stderr


def test_sigterm_leaves_agents_running_for_the_next_daemon(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d, gates, job_id, _ = gated_running_job(daemon_factory, agent, tmp_path)
    assert d.stop(signal.SIGTERM) == 0
    d.start()
    (gates / f"go-{job_id}").touch()
    assert d.wait(job_id)["state"] == "succeeded"


@pytest.mark.parametrize("pool", ["0", "2"])
def test_many_parallel_jobs_on_one_repo_all_succeed(
    pool: str, daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Concurrent worktree commands on one repo used to race inside git
    ("failed to read .git/worktrees/<id>/commondir") and fail a few jobs."""
    d = daemon_factory(
        DISPATCHER_MAX_PARALLEL="8", DISPATCHER_MAX_PARALLEL_PER_REPO="8",
        DISPATCHER_POOL_SIZE=pool,
    ).start()  # fmt: skip
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    ids = [d.submit(name, f"j{i}", command=["true"])["id"] for i in range(40)]
    states = [d.wait(i, timeout=60)["state"] for i in ids]
    assert states == ["succeeded"] * 40, [
        (i, d.job(i)["error"]) for i, s in zip(ids, states, strict=True) if s != "succeeded"
    ]
