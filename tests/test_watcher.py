"""The agent watcher: every running agent watched from one thread, through pidfds (or
polled), for its exit and its deadline. Real processes; waits poll with a deadline."""

from __future__ import annotations

import queue
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.jobs import supervise
from dispatcher.jobs.supervise import Watcher
from dispatcher.process import proc

WAIT = 30.0


class Calls:
    def __init__(self) -> None:
        self.seen: queue.SimpleQueue[tuple[str, int, bool]] = queue.SimpleQueue()

    def exited(self, job_id: int, timed_out: bool) -> None:
        self.seen.put(("exit", job_id, timed_out))

    def timed_out(self, job_id: int) -> None:
        self.seen.put(("timeout", job_id, True))

    def next(self) -> tuple[str, int, bool]:
        return self.seen.get(timeout=WAIT)


@pytest.fixture(params=["pidfd", "polled"])
def watched(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Watcher, Calls, list[subprocess.Popen[bytes]]]]:
    """A started watcher; ``polled``: as on a kernel without pidfds."""
    if request.param == "polled":
        monkeypatch.delattr(supervise.os, "pidfd_open")
    calls = Calls()
    w = Watcher(calls.exited, calls.timed_out)
    w.start()
    children: list[subprocess.Popen[bytes]] = []
    yield w, calls, children
    w.stop()
    for child in children:
        child.kill()
        child.wait(WAIT)


def start(children: list[subprocess.Popen[bytes]], *argv: str, adopted: bool) -> proc.Spawned:
    """A child as spawn gives it, or as a restarted daemon re-adopts it (no popen)."""
    popen = subprocess.Popen(argv)
    children.append(popen)
    start_time = proc.process_start_time(popen.pid)
    assert start_time is not None
    return proc.Spawned(popen.pid, start_time, Path("/nonexistent"), None if adopted else popen)


@pytest.mark.parametrize("adopted", [False, True])
def test_many_agents_one_thread_each_exit_reported_once(
    watched: tuple[Watcher, Calls, list[subprocess.Popen[bytes]]], adopted: bool
) -> None:
    w, calls, children = watched
    for job_id in range(1, 6):
        w.watch(job_id, start(children, "sleep", "0.2", adopted=adopted), 300, 10)
    ended = sorted(calls.next() for _ in range(5))
    assert ended == [("exit", job_id, False) for job_id in range(1, 6)]
    assert calls.seen.empty()


@pytest.mark.parametrize("dies", [True, False])
def test_a_deadline_asks_for_the_kill_then_reports_the_exit_or_gives_up(
    watched: tuple[Watcher, Calls, list[subprocess.Popen[bytes]]], dies: bool
) -> None:
    """At its deadline the agent is reported to be killed; then its exit, or, if it
    outlives the kill by ``after_kill_s``, the runner is told to give up on it."""
    w, calls, children = watched
    child = start(children, "sleep", "300", adopted=not dies)
    w.watch(7, child, 0.1, 10 if dies else 0.2)
    assert calls.next() == ("timeout", 7, True)
    assert proc.is_alive(child.pid, child.start_time)  # asked for, not done
    if dies:
        children[-1].kill()
    assert calls.next() == ("exit", 7, True)
    assert proc.is_alive(child.pid, child.start_time) is not dies


def test_an_adopted_pid_that_is_gone_or_recycled_has_ended(
    watched: tuple[Watcher, Calls, list[subprocess.Popen[bytes]]],
) -> None:
    w, calls, children = watched
    child = start(children, "sleep", "300", adopted=True)
    w.watch(9, proc.Spawned(child.pid, child.start_time + 1, child.exit_file, None), 300, 10)
    assert calls.next() == ("exit", 9, False)


def test_a_deadline_weeks_away_does_not_stop_the_watcher(
    watched: tuple[Watcher, Calls, list[subprocess.Popen[bytes]]],
) -> None:
    """epoll refuses a wait past INT_MAX ms (about 24.8 days): the watcher must not die
    of a long timeout, or every agent after it would go unwatched."""
    w, calls, children = watched
    w.watch(1, start(children, "sleep", "300", adopted=False), 30 * 24 * 3600.0, 10)
    w.watch(2, start(children, "true", adopted=False), 30 * 24 * 3600.0, 10)
    assert calls.next() == ("exit", 2, False)
