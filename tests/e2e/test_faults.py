"""Fault injection against the real daemon: each test breaks something, then checks
the end state (job states, refs, worktrees on disk, the user's checkout)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixture import (
    TERMINAL,
    Daemon,
    LogFollower,
    dispatcher_argv,
    hold_fault,
    pid_alive,
    release_fault,
)
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]


def counting_gate_agent(agent: Agent, gates: Path) -> str:
    """Appends its job id to gates/runs, then waits for gates/go-<id>."""
    gates.mkdir(exist_ok=True)
    return agent(
        "gate.sh",
        f'echo "$DISPATCHER_JOB_ID" >> "{gates}/runs"\n'
        'echo "partial work" > work.txt\n'
        f'while [ ! -f "{gates}/go-$DISPATCHER_JOB_ID" ]; do sleep 0.02; done\n'
        'echo "$DISPATCHER_JOB_ID" > done.txt\n',
    )


def gated_repo(d: Daemon, agent: Agent, tmp_path: Path) -> tuple[Path, str, Path, str]:
    """Repo ``r`` added to ``d``, and a :func:`counting_gate_agent` with its gates in
    ``tmp_path``: (the repo, its name, the gates, the agent's script)."""
    gates = tmp_path / "gates"
    script = counting_gate_agent(agent, gates)
    repo = init_repo(tmp_path / "r")
    return repo, d.add_repo(repo, "r"), gates, script


def runs(gates: Path) -> list[int]:
    path = gates / "runs"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def block_worktree_creation(repo: Path, marks: Path) -> None:
    """A post-checkout hook that holds `git worktree add` until marks/release exists."""
    marks.mkdir(exist_ok=True)
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(
        "#!/bin/sh\n"
        f'touch "{marks}/in-hook"\n'
        f'while [ ! -f "{marks}/release" ]; do sleep 0.02; done\n'
    )
    hook.chmod(0o755)


def no_orphan_worktrees(d: Daemon, repo: Path, name: str) -> None:
    """Every worktree git knows (but the main one) and every dir on disk belongs to a job."""
    jobs = d.api.get("/jobs", params={"repo": name, "limit": 500}).json()["items"]
    claimed = {Path(j["worktree"]).resolve() for j in jobs if j["worktree"]}
    listed = {
        Path(line.split(" ", 1)[1]).resolve()
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    } - {repo.resolve()}
    on_disk = {p.resolve() for p in (d.state_dir / "worktrees" / name).glob("*")}
    assert listed == claimed, (listed, claimed)
    assert on_disk == claimed, (on_disk, claimed)


# ------------------------------------------------------------------ kill -9 at each stage


@pytest.mark.parametrize("stage", ["queued", "preparing", "running"])
def test_sigkill_daemon_at_each_stage_loses_and_duplicates_nothing(
    stage: str, daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_MAX_PARALLEL_PER_REPO="1").start()
    repo, name, gates, script = gated_repo(d, agent, tmp_path)
    marks = tmp_path / "marks"
    if stage == "preparing":
        block_worktree_creation(repo, marks)
        job_ids = [d.submit(name, "prep", command=[script])["id"]]
        wait_until(lambda: (marks / "in-hook").exists(), "the worktree hook")
        assert d.job(job_ids[0])["state"] == "preparing"
    elif stage == "queued":
        job_ids = [d.submit(name, f"j{i}", command=[script])["id"] for i in range(2)]
        d.wait(job_ids[0], {"running"})
        assert d.job(job_ids[1])["state"] == "queued"  # the repo's one slot is taken
    else:
        job_ids = [d.submit(name, "run", command=[script])["id"]]
        d.wait(job_ids[0], {"running"})
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    if stage == "preparing":
        # The orphaned `git worktree add` finishes while the daemon is down.
        (marks / "release").touch()
        wait_until(
            lambda: "initializing" not in git(repo, "worktree", "list", "--porcelain"),
            "the orphaned worktree add",
        )
    for job_id in job_ids:
        (gates / f"go-{job_id}").touch()
    d.start()
    for job_id in job_ids:
        job = d.wait(job_id)
        assert job["state"] == "succeeded", job
        assert git(repo, "show", f"{job['branch']}:done.txt") == str(job_id)
    assert sorted(runs(gates)) == sorted(job_ids)  # each agent ran exactly once
    no_orphan_worktrees(d, repo, name)
    assert d.api.get("/health").json()["jobs_active"] == 0


@pytest.mark.parametrize("agent_state", ["running", "ended"])
def test_kill_9_between_spawn_and_running_adopts_the_agent_not_a_second_run(
    agent_state: str, daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """The daemon dies after starting the agent, before recording it as running. The
    next daemon used to take the job as never started: it removed the worktree under
    the first agent and ran a second one."""
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    repo, name, gates, script = gated_repo(d, agent, tmp_path)
    reached = hold_fault(faults, "runner.after-spawn")
    job_id = d.submit(name, "once", command=[script])["id"]
    wait_until(reached.exists, "the daemon to spawn the agent")
    wait_until(lambda: runs(gates), "the agent to start")
    # Not running yet, so no pid on the job: its claim holds a forked writer's pid and start.
    claim = next((d.state_dir / "jobs" / str(job_id)).glob("spawn-*"))
    assert len(claim.read_text().split()) == 2, claim.read_text()
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    release_fault(faults, "runner.after-spawn")  # the next daemon does not stop there
    exit_file = d.state_dir / "jobs" / str(job_id) / "exit"
    if agent_state == "ended":  # it finishes while no daemon runs
        (gates / f"go-{job_id}").touch()
        wait_until(exit_file.exists, "the agent to end")
    d.start()
    if agent_state == "running":
        assert d.job(job_id)["state"] == "running"  # adopted
        (gates / f"go-{job_id}").touch()
    job = d.wait(job_id)
    assert job["state"] == "succeeded", job
    assert runs(gates) == [job_id]  # one run, not two
    assert git(repo, "show", f"{job['branch']}:done.txt") == str(job_id)
    assert "daemon restarted while the agent was starting" in d.api.get(f"/jobs/{job_id}/log").text
    no_orphan_worktrees(d, repo, name)


def test_kill_9_just_before_spawn_requeues_and_runs_once(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    repo, name, gates, script = gated_repo(d, agent, tmp_path)
    reached = hold_fault(faults, "runner.before-spawn")
    job_id = d.submit(name, "once", command=[script])["id"]
    wait_until(reached.exists, "the daemon to be about to spawn")
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    release_fault(faults, "runner.before-spawn")
    (gates / f"go-{job_id}").touch()
    d.start()
    job = d.wait(job_id)
    assert job["state"] == "succeeded", job
    assert runs(gates) == [job_id]
    assert "daemon restarted while preparing: re-queued" in d.api.get(f"/jobs/{job_id}/log").text
    no_orphan_worktrees(d, repo, name)


def test_lost_agent_is_requeued_with_backoff_and_its_work_saved(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_RETRY_BACKOFF_SECONDS="0.2").start()
    repo, name, gates, script = gated_repo(d, agent, tmp_path)
    job_id = d.submit(name, "long", command=[script])["id"]
    d.wait(job_id, {"running"})
    wait_until(lambda: runs(gates), "the agent to start")
    pid = d.agent_group(job_id)
    d.stop(signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)  # the agent dies too, leaving no exit status
    wait_until(lambda: not pid_alive(pid), "agent death")
    (gates / f"go-{job_id}").touch()
    d.start()
    job = d.wait(job_id)
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 2
    assert runs(gates) == [job_id, job_id]
    saved = f"refs/dispatcher/attempts/{job_id}/1"
    assert git(repo, "show", f"{saved}:work.txt") == "partial work"  # attempt 1's work
    assert "re-queued" in d.api.get(f"/jobs/{job_id}/log").text
    no_orphan_worktrees(d, repo, name)


# ------------------------------------------------------------------ the agent and its worktree


def test_killed_agent_fails_with_its_signal_not_as_canceled(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory().start()
    _, name, _, script = gated_repo(d, agent, tmp_path)
    job_id = d.submit(name, "x", command=[script])["id"]
    d.wait(job_id, {"running"})
    pid = d.agent_group(job_id)
    os.killpg(pid, signal.SIGKILL)
    job = d.wait(job_id)
    assert job["state"] == "failed"
    assert job["signal"] == signal.SIGKILL
    assert "SIGKILL" in job["error"]


def _remove(worktree: Path) -> None:
    subprocess.run(["rm", "-rf", str(worktree)], check=True)


def _corrupt(worktree: Path) -> None:
    (worktree / ".git").write_text("gitdir: /nonexistent/garbage\n")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [(_remove, "vanished"), (_corrupt, "could not record the result")],
    ids=["removed", "corrupted-git-file"],
)
def test_worktree_broken_under_a_running_agent(
    breakage: Callable[[Path], None],
    reason: str,
    daemon_factory: Callable[..., Daemon],
    agent: Agent,
    tmp_path: Path,
) -> None:
    d = daemon_factory().start()
    repo, name, gates, script = gated_repo(d, agent, tmp_path)
    job_id = d.submit(name, "x", command=[script])["id"]
    job = d.wait(job_id, {"running"})
    wait_until(lambda: runs(gates), "the agent to start")
    breakage(Path(job["worktree"]))
    (gates / f"go-{job_id}").touch()
    job = d.wait(job_id)
    assert job["state"] == "failed"
    assert reason in job["error"], job["error"]
    assert git(repo, "rev-parse", "main")  # the repository itself is fine
    assert git(repo, "branch", "--list", job["branch"])  # the branch is kept
    assert d.api.get("/health").status_code == 200
    # The next job in the repo is unaffected.
    ok = d.wait(d.submit(name, "y", command=["true"])["id"])
    assert ok["state"] == "succeeded"


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
    )
    return filler


def test_full_disk_fails_the_job_cleanly_and_recovers(
    daemon_factory: Callable[..., Daemon], small_disk: Path, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite")
    d.state_dir = small_disk / "state"  # worktrees and logs on the small disk
    d.start()
    repo = init_repo(tmp_path / "r", files={f"f{i}.txt": "x" * 4096 for i in range(50)})
    name = d.add_repo(repo, "r")
    filler = fill(small_disk)
    job = d.wait(d.submit(name, "x", command=["true"])["id"])
    assert job["state"] == "failed"
    assert "No space left" in job["error"] or "space" in job["error"].lower(), job["error"]
    assert job["worktree"] is None
    assert not (small_disk / "state" / "worktrees" / "r" / str(job["id"])).exists()
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert not git(repo, "branch", "--list", job["branch"])
    assert d.api.get("/health").json()["status"] == "ok"
    filler.unlink()
    again = d.wait(int(d.cli("retry", str(job["id"])).stdout.strip()))
    assert again["state"] == "succeeded"


# ------------------------------------------------------------------ requests


def test_idempotency_key_replays_and_refuses_reuse(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    body = {"repo": name, "prompt": "once", "command": ["true"]}
    headers = {"Idempotency-Key": f"k-{name}"}
    first = daemon.api.post("/jobs", json=body, headers=headers)
    assert first.status_code == 201
    again = daemon.api.post("/jobs", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    other = daemon.api.post("/jobs", json={**body, "prompt": "twice"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    jobs = daemon.api.get("/jobs", params={"repo": name}).json()["items"]
    assert [j["id"] for j in jobs] == [first.json()["id"]]
    # Without a valid token nothing is replayed: the request is refused as usual.
    stranger = httpx.post(f"{daemon.url}/jobs", json=body, headers=headers)
    assert stranger.status_code == 401


def test_concurrent_requests_with_one_idempotency_key_make_one_job(
    daemon: Daemon, repo: Path
) -> None:
    name = daemon.add_repo(repo)
    body = {"repo": name, "prompt": "race", "command": ["true"]}
    token = daemon.token
    results: list[tuple[int, int]] = []
    # The five requests leave together, or the first could be answered (and stored)
    # before the last thread starts: then only the replay path was tested.
    together = threading.Barrier(5, timeout=30)

    def post() -> None:
        with httpx.Client(base_url=daemon.url) as c:
            together.wait()
            resp = c.post(
                "/jobs", json=body,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"race-{name}"},
            )  # fmt: skip
            results.append((resp.status_code, resp.json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a request did not end"
    assert len(results) == 5, results  # none failed in its thread
    assert {code for code, _ in results} == {201}, results
    assert len({job_id for _, job_id in results}) == 1, results
    assert len(daemon.api.get("/jobs", params={"repo": name}).json()["items"]) == 1


def test_huge_request_body_is_refused_and_daemon_lives(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    huge = {"repo": name, "prompt": "x" * (11 * 1024 * 1024), "command": ["true"]}
    resp = daemon.api.post("/jobs", json=huge)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    # Chunked (no Content-Length): counted as it streams.
    chunks = (b"x" * 65536 for _ in range(200))
    resp = daemon.api.post("/jobs", content=chunks, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert daemon.api.get("/health").status_code == 200


# ------------------------------------------------------------------ shutdown and exposure


def test_sigterm_ends_log_streams_and_exits_in_bounded_time(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory().start()
    _, name, gates, script = gated_repo(d, agent, tmp_path)
    job_id = d.submit(name, "x", command=[script])["id"]
    d.wait(job_id, {"running"})
    wait_until(lambda: runs(gates), "the agent to start")
    with LogFollower(d, job_id) as follower:
        # The daemon's notes come before the agent's start: once the follower printed
        # them its stream is open (else SIGTERM could come before it connected).
        follower.wait_for(f"job {job_id}: worktree")
        started = time.monotonic()
        assert d.stop(signal.SIGTERM, timeout=15) == 0
        # The open stream must not hold the daemon up: requests get 3 s of graceful
        # shutdown, the rest is the daemon's own stop work; room for a loaded machine.
        assert time.monotonic() - started < 10
        follower.finish(timeout=15)  # the stream ended; the follower did not hang
    # The agent was left running for the next daemon, which finishes the job.
    (gates / f"go-{job_id}").touch()
    d.start()
    assert d.wait(job_id)["state"] == "succeeded"


def test_non_loopback_bind_needs_a_long_token(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(DISPATCHER_TOKEN="short")
    result = subprocess.run(
        [*dispatcher_argv(), "serve", "--host", "0.0.0.0", "--port", "0",
         "--state-dir", str(d.state_dir)],
        env=d.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr
    empty = subprocess.run(
        [*dispatcher_argv(), "serve", "--port", "0", "--state-dir", str(d.state_dir)],
        env={**d.env, "DISPATCHER_TOKEN": " "}, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert empty.returncode == 1
    assert "token is empty" in empty.stderr


# ------------------------------------------------------------------ resource limits


def test_runaway_log_is_capped_and_rotated(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_MAX_LOG_BYTES="20000").start()
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    gate, burst = tmp_path / "go", tmp_path / "burst-done"
    script = agent(
        "chatty.sh",
        # 200 KB of output (10x the cap), then wait, then one last line.
        f'i=0; while [ $i -lt 2000 ]; do printf "line %04d %090d\\n" $i 0; i=$((i+1)); done\n'
        f'touch "{burst}"\n'
        f'while [ ! -f "{gate}" ]; do sleep 0.02; done\n'
        "echo last line\n",
    )
    job_id = d.submit(name, "x", command=[script])["id"]
    log = d.state_dir / "jobs" / str(job_id) / "agent.log"
    rotated = log.parent / "agent.log.1"
    wait_until(lambda: burst.exists(), "the burst")
    assert rotated.exists()
    gate.touch()
    assert d.wait(job_id)["state"] == "succeeded"
    # Rotated as it was written: neither file is over the cap, the newest output is
    # in agent.log and the 20 KB before it in agent.log.1; with keep=1 no agent.log.2.
    assert rotated.stat().st_size <= 20000
    assert log.stat().st_size <= 20000
    assert "line 1999" in rotated.read_text() + log.read_text()
    assert "line 1000" not in rotated.read_text() + log.read_text()  # dropped
    assert rotated.read_text().startswith("[dispatcher] log rotated: older output in agent.log.1")
    assert not (log.parent / "agent.log.2").exists()
    text = d.api.get(f"/jobs/{job_id}/log").text
    assert "log rotated" in text
    assert "last line" in text


def test_log_cap_holds_while_the_agent_writes(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """A log was capped only every few seconds: an agent writing 2 GB left 1 GB on disk
    against a 50 MB cap. Now the agent's output is capped as it is written."""
    cap, slack = 1 << 20, 64 << 10
    d = daemon_factory(DISPATCHER_MAX_LOG_BYTES=str(cap), DISPATCHER_LOG_KEEP="1").start()
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    script = agent(
        "flood.sh",
        'yes "flood flood flood flood flood flood flood flood" | head -c 300000000\n'
        "echo; echo last line\n",
    )
    job_id = d.submit(name, "x", command=[script])["id"]
    jobdir = d.state_dir / "jobs" / str(job_id)

    def on_disk() -> int:
        total = 0
        for path in (jobdir / "agent.log", jobdir / "agent.log.1", jobdir / "agent.log.2"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    peak, polls = 0, 0
    deadline = time.monotonic() + 50
    while d.job(job_id)["state"] not in TERMINAL:
        for _ in range(200):  # many size checks per API call
            peak = max(peak, on_disk())
            polls += 1
        assert time.monotonic() < deadline, "the flood did not end"
    assert peak <= 2 * cap + slack, f"{peak} bytes on disk against a cap of {cap}"
    assert polls > 1000
    job = d.job(job_id)
    assert job["state"] == "succeeded", job
    assert (jobdir / "agent.log.1").exists()  # it did write far more than the cap
    assert "last line" in (jobdir / "agent.log").read_text()


def test_cpu_limit_ends_a_runaway_agent(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = daemon_factory(DISPATCHER_AGENT_CPU_SECONDS="1").start()
    name = d.add_repo(init_repo(tmp_path / "r"), "r")
    spin = agent("spin.sh", "while :; do :; done\n")
    job = d.wait(d.submit(name, "x", command=[spin])["id"], timeout=30)
    assert job["state"] == "failed"
    assert job["signal"] == signal.SIGXCPU
    assert "SIGXCPU" in job["error"]
