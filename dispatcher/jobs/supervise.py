"""Every running agent watched from one thread, like a child watcher: its exit and its deadline.

Each agent's wrapper (or log writer) is watched through a pidfd (``os.pidfd_open``,
which works for a process that is not the daemon's child too: a re-adopted agent, a
writer forked by the fork server) in one selector, so
a running agent costs the daemon no thread and no wake-up until it ends or its
deadline passes. Where the kernel has no pidfds (before Linux 5.3), agents are
polled instead. The watcher only notices: what is done about it (killing the
tree, recording the end) is the runner's, off this thread.

The job's log is capped as the agent writes it, by its log writer
(dispatcher/process/logpipe.py), so watching is all there is to do while the
agent runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.process import proc

log = logging.getLogger(__name__)

# How often agents without a pidfd are looked at (an old kernel).
MAX_WAIT_S = 3600.0  # the longest one select waits; deadlines further away come round again
POLL_S = 0.05


@dataclass
class _Watched:
    job_id: int
    child: proc.Spawned
    deadline: float  # time.monotonic() at which on_timeout is called (then the give-up time)
    after_kill_s: float  # how long to wait for the exit once timed out, before giving up
    pidfd: int | None = None
    timed_out: bool = False


class Watcher:
    """Watches agents from one thread. ``on_timeout(job_id)``: the agent's deadline
    passed (it still runs; kill it). ``on_exit(job_id, timed_out)``: its wrapper ended,
    or it did not end within ``after_kill_s`` of its deadline. Both are called on the
    watcher's thread and must not block."""

    def __init__(
        self, on_exit: Callable[[int, bool], None], on_timeout: Callable[[int], None]
    ) -> None:
        self.on_exit = on_exit
        self.on_timeout = on_timeout
        self._incoming: queue.SimpleQueue[_Watched] = queue.SimpleQueue()
        self._watched: dict[int, _Watched] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pipe = threading.Lock()  # a wake-up never writes to an fd closed meanwhile
        self._wake_r, self._wake_w = -1, -1

    def start(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="agents", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (the agents keep running)."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def watch(self, job_id: int, child: proc.Spawned, seconds: float, after_kill_s: float) -> None:
        """Watch ``child`` until it ends; ``on_timeout`` once ``seconds`` have passed."""
        deadline = time.monotonic() + max(0.0, seconds)
        self._incoming.put(_Watched(job_id, child, deadline, after_kill_s))
        self._wake()

    def _wake(self) -> None:
        with self._pipe:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):  # a full pipe (EAGAIN) wakes it already
                    os.write(self._wake_w, b"\0")

    def _tell(self, call: Callable[..., None], *args: object) -> None:
        try:
            call(*args)
        except Exception:  # never the watcher's end: every other agent would go unwatched
            log.exception("the agent watcher's callback failed")

    # ------------------------------------------------------------ the thread

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            try:
                while not self._stopping.is_set():
                    try:
                        self._step(sel)
                    except Exception:  # never the watcher's end: the runner's jobs would hang
                        log.exception("the agent watcher's step failed; going on")
                        self._stopping.wait(POLL_S)  # not a busy loop if it fails again
            finally:
                for w in self._watched.values():
                    self._close(sel, w)
                with self._pipe:
                    os.close(self._wake_r)
                    os.close(self._wake_w)
                    self._wake_r = self._wake_w = -1

    def _step(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                self._add(sel, self._incoming.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        timeout = min((w.deadline for w in self._watched.values()), default=now + 60) - now
        if any(w.pidfd is None for w in self._watched.values()):
            timeout = min(timeout, POLL_S)
        # Capped: epoll refuses a timeout past INT_MAX ms (a deadline 25 days away).
        for key, _ in sel.select(min(max(0.0, timeout), MAX_WAIT_S)):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
            else:
                self._ended(sel, key.data)
        now = time.monotonic()
        for w in list(self._watched.values()):
            if w.pidfd is None and _exited(w.child):
                self._ended(sel, w)
            elif w.deadline <= now and not w.timed_out:
                w.timed_out, w.deadline = True, now + w.after_kill_s
                self._tell(self.on_timeout, w.job_id)
            elif w.deadline <= now:  # it did not end after the kill: give up on it
                self._ended(sel, w)

    def _add(self, sel: selectors.BaseSelector, w: _Watched) -> None:
        self._watched[w.job_id] = w
        try:
            w.pidfd = os.pidfd_open(w.child.pid)
        except ProcessLookupError:  # already gone (and reaped: a re-adopted agent)
            self._ended(sel, w)
            return
        except (AttributeError, OSError):
            return  # no pidfds here: polled
        if w.child.popen is None and not proc.is_alive(w.child.pid, w.child.start_time):
            self._ended(sel, w)  # the pid was recycled before we held it
            return
        sel.register(w.pidfd, selectors.EVENT_READ, w)

    def _ended(self, sel: selectors.BaseSelector, w: _Watched) -> None:
        self._close(sel, w)
        self._watched.pop(w.job_id, None)
        self._tell(self.on_exit, w.job_id, w.timed_out)

    @staticmethod
    def _close(sel: selectors.BaseSelector, w: _Watched) -> None:
        if w.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = None


def _exited(child: proc.Spawned) -> bool:
    if child.popen is not None:
        return child.popen.poll() is not None
    return not proc.is_alive(child.pid, child.start_time)
