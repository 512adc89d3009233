"""Private daemons: parallelism limits, FIFO, kill -9 and restart, one daemon per state dir."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_fixture import Daemon, dispatcher_argv, pid_alive
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

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
    writer, server = d.forked_writer(running)
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    # The fork server ends with the daemon; the writer forked from it and its agent live
    # on in their own session while the daemon is down; then the agent finishes.
    wait_until(lambda: not pid_alive(server), "the fork server to end with the daemon")
    assert pid_alive(writer)
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
    d.forked_writer(job_id)
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


# ------------------------------------------------------------------ processes that leave


def cgroups_usable() -> bool:
    """A cgroup2 mount with our own cgroup in it that we may make cgroups in (read
    here, not through dispatcher.process.cgroups, so the test runs against any daemon)."""
    own = [ln[3:] for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln[:3] == "0::"]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.startswith("cgroup2 ") and own:
            path = Path(left.split()[4]) / own[0].strip().lstrip("/")
            return os.access(path, os.W_OK)
    return False


def escaping_agent(agent: Agent, marks: Path, then: str) -> str:
    """An agent that starts a grandchild in a session of its own (out of the agent's
    process group), records its pid, then runs ``then``."""
    marks.mkdir(exist_ok=True)
    return agent(
        "escape.sh",
        f'setsid sh -c \'echo $$ > "{marks}/escaped.tmp"; '
        f'mv "{marks}/escaped.tmp" "{marks}/escaped"; exec sleep 300\' &\n'
        f'while [ ! -f "{marks}/escaped" ]; do sleep 0.01; done\n' + then,
    )


def escaped_pid(marks: Path) -> int:
    wait_until((marks / "escaped").exists, "the grandchild to start")
    pid = int((marks / "escaped").read_text())
    assert os.getsid(pid) == pid  # it did leave the agent's session
    return pid


@pytest.mark.skipif(not cgroups_usable(), reason="no cgroup v2 to make job cgroups in")
@pytest.mark.parametrize("end", ["exit", "cancel", "timeout", "restart"])
def test_a_process_that_left_the_session_dies_with_the_job(
    end: str, daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """A grandchild that calls setsid left the agent's process group, which is all the
    daemon used to kill: it outlived the job's end, a cancel, a timeout, a restart.
    Without the sandbox: its own pid namespace also ends such a process when the
    agent exits, and the job's cgroup is what must hold on its own."""
    marks = tmp_path / "marks"
    gate = tmp_path / "go"
    then = {
        "exit": "exit 0\n",
        "cancel": "while :; do sleep 1; done\n",
        "timeout": "while :; do sleep 1; done\n",
        "restart": f'while [ ! -f "{gate}" ]; do sleep 0.02; done\n',
    }[end]
    d = daemon_factory(DISPATCHER_SANDBOX="off").start()
    name = d.add_repo(init_repo(tmp_path / "r"))
    body: dict[str, object] = {"timeout_minutes": 0.05} if end == "timeout" else {}
    job_id = d.submit(name, "x", command=[escaping_agent(agent, marks, then)], **body)["id"]
    pid = escaped_pid(marks)
    try:
        if end == "cancel":
            d.wait(job_id, {"running"})
            assert d.api.post(f"/jobs/{job_id}/cancel").status_code == 200
        elif end == "restart":  # the agent ends while no daemon runs
            d.wait(job_id, {"running"})
            assert d.stop(signal.SIGKILL) == -signal.SIGKILL
            gate.touch()
            exit_file = d.state_dir / "jobs" / str(job_id) / "exit"
            wait_until(exit_file.exists, "the agent to end")
            assert pid_alive(pid)  # nothing killed it yet
            d.start()
        job = d.wait(job_id, timeout=40)
        want = {"exit": "succeeded", "cancel": "canceled", "timeout": "timed_out"}
        assert job["state"] == want.get(end, "succeeded"), job
        wait_until(lambda: not pid_alive(pid), f"the grandchild {pid} to end with the job", 10)
        assert "cgroups are unavailable" not in d.api.get(f"/jobs/{job_id}/log").text
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_without_cgroups_the_job_log_says_so(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_CGROUPS="off").start()
    name = d.add_repo(init_repo(tmp_path / "r"))
    job = d.wait(d.submit(name, "x", command=["true"])["id"])
    assert job["state"] == "succeeded"
    log = d.api.get(f"/jobs/{job['id']}/log").text
    assert "warning: cgroups are unavailable (DISPATCHER_CGROUPS=off)" in log
    assert "cgroups are unavailable" in d.log_path.read_text()  # and the daemon log, once


def daemon_threads(d: Daemon) -> list[str]:
    """The names of the daemon's threads (from /proc: what the kernel counts)."""
    assert d.proc is not None
    task = Path(f"/proc/{d.proc.pid}/task")
    return sorted((t / "comm").read_text().strip() for t in task.iterdir())


def test_running_agents_hold_no_thread_each(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """One watcher supervises every running agent: six running agents cost the daemon no
    more threads than one (it used to block a thread in wait() for each)."""
    d = daemon_factory(DISPATCHER_MAX_PARALLEL="6", DISPATCHER_MAX_PARALLEL_PER_REPO="6").start()
    gates = tmp_path / "gates"
    script = gate_agent(agent, gates)
    name = d.add_repo(init_repo(tmp_path / "r"))
    ids = [d.submit(name, "j0", command=[script])["id"]]
    d.wait(ids[0], {"running"})
    one = daemon_threads(d)
    for i in range(1, 6):  # one at a time: a prepare never overlaps another
        ids.append(d.submit(name, f"j{i}", command=[script])["id"])
        d.wait(ids[-1], {"running"})
    six = daemon_threads(d)
    assert len(six) <= len(one) + 1, (one, six)
    for job_id in ids:
        (gates / f"go-{job_id}").touch()
    assert all(d.wait(i)["state"] == "succeeded" for i in ids)
