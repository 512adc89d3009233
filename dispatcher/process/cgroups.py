"""cgroup (v2) directories that hold a whole process tree, and end it.

A process group is left by any process that calls ``setsid``; a cgroup is not
(only a process with write access to another cgroup's ``cgroup.procs`` can move
out). So each agent runs in a cgroup of its own, which the agent's wrapper joins
before anything else (see :func:`dispatcher.process.proc.spawn`), and :func:`kill` ends
every process in it.

* :func:`find_parent` finds where cgroups can be made: the cgroup2 mount (from
  ``/proc/self/mountinfo``) joined with this process's own cgroup (the ``0::``
  line of ``/proc/self/cgroup``), and :func:`probe` checks that a child can be
  made and removed there. Both raise :class:`Unavailable` saying why not.
* :func:`live_pids` lists who is still in one (and knows when it cannot tell).
* :func:`kill` writes ``1`` to ``cgroup.kill`` (Linux 5.14+); without it, it
  SIGKILLs every pid in ``cgroup.procs`` until none is left. :func:`remove`
  then removes the directory.

Standard library only; nothing here knows about jobs or the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


class Unavailable(Exception):
    """Cgroups cannot be used here; the message says why."""


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces and the like are written as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_mount(mountinfo: str) -> Path | None:
    """The first cgroup2 mount point listed in a ``/proc/<pid>/mountinfo`` text."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and right.split()[:1] == ["cgroup2"]:
            return Path(_unescape(fields[4]))
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path (``/...``) from a ``/proc/<pid>/cgroup`` text."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def find_parent(name: str) -> Path:
    """``<cgroup2 mount><own cgroup>/<name>``: where this daemon's job cgroups go."""
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        own = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        raise Unavailable(f"cannot read /proc: {exc}") from exc
    if mount is None:
        raise Unavailable("no cgroup2 file system is mounted")
    if own is None:
        raise Unavailable("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
    return mount / own.lstrip("/") / name


def probe(parent: Path) -> None:
    """Make ``parent`` (if missing) and check a child cgroup can be made and removed in it."""
    test = parent / f"probe-{os.getpid()}"
    try:
        parent.mkdir(exist_ok=True)
        if not (parent / "cgroup.procs").exists():
            raise Unavailable(f"{parent} is not in a cgroup2 file system")
        test.mkdir()
        test.rmdir()
    except OSError as exc:
        raise Unavailable(f"cannot create a cgroup under {parent}: {exc.strerror}") from exc


def create(path: Path) -> None:
    """Make the cgroup ``path`` (its parent must exist). Raises OSError."""
    path.mkdir()


def pids(path: Path) -> list[int]:
    """The processes in the cgroup ``path`` (none if it does not exist)."""
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def live_pids(path: Path) -> list[int] | None:
    """The live processes in the cgroup ``path`` (zombies are not listed), or None when
    it cannot tell which processes belong to it: it is missing, or nothing ever ran in
    it (its CPU use is zero: the wrapper that was to join it could not)."""
    try:
        members = [int(x) for x in (path / "cgroup.procs").read_text().split()]
        if members:
            return members
        stat = (path / "cpu.stat").read_text().split()
    except (OSError, ValueError):
        return None
    usage = stat[stat.index("usage_usec") + 1] if "usage_usec" in stat else "0"
    return [] if usage != "0" else None


def kill(path: Path, *, timeout: float = 10.0, kill_file: bool = True) -> bool:
    """SIGKILL every process in the cgroup ``path`` and wait until it is empty.

    True when it is empty (or does not exist); False if processes are still
    listed after ``timeout`` (they may be stuck in the kernel). ``kill_file``
    False skips ``cgroup.kill`` (as on kernels that lack it): each listed pid is
    signalled, again until none is left (a fork may add one meanwhile).
    """
    if not path.is_dir():
        return True
    killed = False
    if kill_file:
        try:
            (path / "cgroup.kill").write_text("1\n")
            killed = True
        except OSError:  # before Linux 5.14: one pid at a time, until none is left
            pass
    deadline = time.monotonic() + timeout
    delay = 0.005
    while members := pids(path):
        if not killed:
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def remove(path: Path) -> None:
    """Kill what is in the cgroup ``path`` and remove it (missing: nothing to do).
    Raises OSError if it cannot be removed."""
    kill(path)
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def children(parent: Path) -> list[Path]:
    """The cgroups directly under ``parent``."""
    try:
        return [p for p in parent.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
