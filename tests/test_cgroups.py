"""cgroup (v2) helpers: parsing /proc, and real cgroups where this machine has them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.process import cgroups, proc
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


def test_a_tree_that_left_its_session_is_killed_with_its_cgroup(
    parent: Path, tmp_path: Path
) -> None:
    job = parent / "job-1-abc"
    cgroups.create(job)
    agent = tmp_path / "agent.sh"
    agent.write_text(
        "#!/bin/sh\nsetsid sh -c 'echo $$ > escaped.tmp; mv escaped.tmp escaped; exec sleep 300' &\n"
        "sleep 300\n"
    )
    agent.chmod(0o755)
    child = proc.spawn(
        [str(agent)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, stdin_path=None,
        log_path=tmp_path / "agent.log", exit_file=tmp_path / "exit", cgroup=job,
        log_cap=proc.LogCap(1 << 20, 1, 4096),
    )  # fmt: skip
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
