"""cgroup (v2) helpers: parsing /proc, and real cgroups where this machine has them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.process import cgroups, proc, sandbox
from tests.daemon_fixture import pid_alive
from tests.waiting import wait_until

MOUNTINFO = (
    "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n"
    "35 25 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n"
    "41 35 0:38 / /sys/fs/cgroup/my\\040unified rw,relatime - cgroup2 cgroup2 rw\n"
    "42 35 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
)


def test_cgroup2_mount_is_read_from_mountinfo_with_escapes() -> None:
    assert cgroups.cgroup2_mount(MOUNTINFO) == Path("/sys/fs/cgroup/my unified")
    assert cgroups.cgroup2_mount(MOUNTINFO.replace("cgroup2 cgroup2", "ext4 /dev/x")) is None


@pytest.mark.parametrize(
    ("text", "own"),
    [
        ("4:memory:/a\n0::/user.slice/x.scope\n", "/user.slice/x.scope"),
        ("0::/\n", "/"),
        ("4:memory:/a\n1:cpu:/\n", None),  # cgroup v1 only
    ],
)
def test_own_cgroup_is_the_0_line(text: str, own: str | None) -> None:
    assert cgroups.own_cgroup(text) == own


def test_probe_outside_a_cgroup_file_system_says_why(tmp_path: Path) -> None:
    with pytest.raises(cgroups.Unavailable, match="not in a cgroup2 file system"):
        cgroups.probe(tmp_path / "parent")
    with pytest.raises(cgroups.Unavailable, match="cannot create a cgroup"):
        cgroups.probe(tmp_path / "missing" / "parent")


@pytest.fixture
def parent() -> Iterator[Path]:
    try:
        path = cgroups.find_parent(f"dispatcher-test-{os.getpid()}-{time.monotonic_ns()}")
        cgroups.probe(path)
    except cgroups.Unavailable as exc:
        pytest.skip(f"no usable cgroup v2 here: {exc}")
    yield path
    for child in cgroups.children(path):
        cgroups.remove(child)
    path.rmdir()


def _spawn_agent(tmp_path: Path, body: str, cgroup: Path | None) -> proc.Spawned:
    """A shell agent (``body``) spawned as the runner does, in ``cgroup``."""
    agent = tmp_path / "agent.sh"
    agent.write_text("#!/bin/sh\n" + body)
    agent.chmod(0o755)
    return proc.spawn(
        [str(agent)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, stdin_path=None,
        log_path=tmp_path / "agent.log", exit_file=tmp_path / "exit", cgroup=cgroup,
        log_cap=proc.LogCap(1 << 20, 1, 4096),
    )  # fmt: skip


def test_a_tree_that_left_its_session_is_killed_with_its_cgroup(
    parent: Path, tmp_path: Path
) -> None:
    job = parent / "job-1-abc"
    cgroups.create(job)
    child = _spawn_agent(
        tmp_path,
        "setsid sh -c 'echo $$ > escaped.tmp; mv escaped.tmp escaped; exec sleep 300' &\n"
        "sleep 300\n",
        job,
    )
    wait_until((tmp_path / "escaped").exists, "the grandchild to write its pid", 30)
    escaped = int((tmp_path / "escaped").read_text())
    try:
        assert os.getsid(escaped) != child.pid  # out of the agent's session
        assert child.pid in cgroups.pids(job) and escaped in cgroups.pids(job)
        assert cgroups.children(parent) == [job]
        cgroups.remove(job)
        assert not job.exists()
        assert proc.wait(child, timeout=30) == -signal.SIGKILL
        wait_until(lambda: not pid_alive(escaped), "the escaped grandchild to end", 10)
    finally:
        if proc.process_start_time(escaped) is not None:
            os.kill(escaped, signal.SIGKILL)


def test_kill_and_remove_of_a_missing_cgroup_are_harmless(parent: Path) -> None:
    assert cgroups.kill(parent / "nope") is True
    cgroups.remove(parent / "nope")
    assert cgroups.pids(parent / "nope") == []


def test_kill_without_cgroup_kill_signals_each_member(parent: Path) -> None:
    """Kernels before 5.14 have no cgroup.kill: each listed pid gets SIGKILL instead."""
    job = parent / "job-2-abc"
    cgroups.create(job)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        (job / "cgroup.procs").write_text(str(sleeper.pid))
        assert cgroups.pids(job) == [sleeper.pid]
        assert cgroups.kill(job, timeout=10, kill_file=False) is True
        assert sleeper.wait(10) == -signal.SIGKILL
        cgroups.remove(job)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def _spawn_leaving(tmp_path: Path, cgroup: Path | None) -> tuple[proc.Spawned, int]:
    """An agent that ends at once, leaving a sleep behind in its process group."""
    child = _spawn_agent(tmp_path, "sleep 300 &\necho $! > left.tmp\nmv left.tmp left\n", cgroup)
    assert proc.wait(child, timeout=30) == 0
    return child, int((tmp_path / "left").read_text())


def test_live_pids_knows_when_it_cannot_tell(parent: Path) -> None:
    job = parent / "job-3-abc"
    cgroups.create(job)
    assert cgroups.live_pids(job) is None  # nothing ever ran in it
    assert cgroups.live_pids(parent / "nope") is None
    ran = subprocess.Popen(["sh", "-c", f"echo $$ > {job}/cgroup.procs; exit 0"])
    assert ran.wait(10) == 0
    assert cgroups.live_pids(job) == []  # something ran, and nothing is left
    cgroups.remove(job)


def test_kill_tree_reads_the_group_from_the_cgroup_not_every_process(
    parent: Path, tmp_path: Path
) -> None:
    """What the agent left in its group is found (and killed) through the job's cgroup:
    no look through /proc."""
    job = parent / "job-4-abc"
    cgroups.create(job)
    child, left = _spawn_leaving(tmp_path, job)
    try:
        assert os.getpgid(left) == child.pid and left in cgroups.pids(job)
        scans = proc.proc_scans
        proc.kill_tree(child.pid, None, grace=10, cgroup=job)
        wait_until(lambda: not pid_alive(left), "the leftover sleep to end", 10)
        assert proc.proc_scans == scans
    finally:
        if proc.process_start_time(left) is not None:
            os.kill(left, signal.SIGKILL)
        cgroups.remove(job)


def test_kill_tree_looks_through_every_process_when_the_wrapper_never_joined(
    parent: Path, tmp_path: Path
) -> None:
    """A cgroup nothing ran in (the wrapper could not join it) does not hide the group."""
    job = parent / "job-5-abc"
    cgroups.create(job)
    child, left = _spawn_leaving(tmp_path, None)
    try:
        scans = proc.proc_scans
        proc.kill_tree(child.pid, None, grace=10, cgroup=job)
        wait_until(lambda: not pid_alive(left), "the leftover sleep to end", 10)
        assert proc.proc_scans > scans
    finally:
        if proc.process_start_time(left) is not None:
            os.kill(left, signal.SIGKILL)
        cgroups.remove(job)


@pytest.mark.skipif(sandbox.probe("bwrap")[0] is None, reason="bubblewrap cannot run here")
def test_the_zombie_a_boxed_agent_leaves_costs_no_look_through_proc(
    parent: Path, tmp_path: Path
) -> None:
    """bubblewrap's init inside the box outlives the wrapper as a zombie of the machine's
    init: the group is then alive for killpg, yet nothing in it lives."""
    job = parent / "job-6-abc"
    cgroups.create(job)
    box = sandbox.sandbox_for("bwrap", "bwrap")
    argv = box.wrap(["true"], sandbox.View(workdir=tmp_path), env=os.environ)
    child = proc.spawn(
        argv, cwd=tmp_path, env=dict(os.environ), stdin_path=None,
        log_path=tmp_path / "agent.log", exit_file=tmp_path / "exit", cgroup=job,
        log_cap=proc.LogCap(1 << 20, 1, 4096),
    )  # fmt: skip
    assert proc.wait(child, timeout=30) == 0
    scans = proc.proc_scans
    started = time.monotonic()
    proc.kill_tree(child.pid, None, grace=10, cgroup=child.cgroup)
    assert time.monotonic() - started < 5
    assert proc.proc_scans == scans
    cgroups.remove(job)
