"""The daemon's end of the log writer's fork server (:mod:`dispatcher.process.zygote`).

:class:`ForkServer` starts the server (``python -I -S zygote.py FD``) on first use
or :meth:`ForkServer.start`, sends it one request at a time over a socket pair,
and reads each forked writer's pid and start time from the request's report pipe.
Whenever it cannot (the server is not there, died, or did not answer) it says so
at debug level and answers None: :func:`dispatcher.process.proc.spawn` then spawns
through the ``sh`` wrapper, so no job fails for the fast path. A lost server is
started again at a later spawn, at most every ``restart_after`` seconds.

Standard library only; nothing here knows about jobs or the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time

from dispatcher.process import zygote

log = logging.getLogger(__name__)

# How long a spawn waits for its writer's report before giving up on the server (which
# is killed: a server that late may be stuck, and its writer would start late too).
REPORT_TIMEOUT_S = 30.0
_SERVER_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")


class ForkServer:
    """The daemon's handle on its fork server; safe to use from many threads."""

    def __init__(self, python: str = sys.executable, *, restart_after: float = 1.0) -> None:
        self.python = python
        self.restart_after = restart_after
        self._lock = threading.Lock()  # one request on the socket at a time
        self._popen: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lost_at: float | None = None
        self._closed = False  # after close(): no server is started again

    @property
    def pid(self) -> int | None:
        """The server's pid, while it is thought to run."""
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        """Start the server now (it starts up while the caller goes on)."""
        with self._lock:
            self._ensure()

    def close(self) -> None:
        """Stop the server (it exits when its socket closes); the writers run on."""
        with self._lock:
            self._closed = True
            self._drop()

    def spawn(self, request: zygote.Request, stdin_fd: int, log_fd: int) -> tuple[int, int] | None:
        """Fork a writer for ``request``: its pid and kernel start time. None when the
        server is not there or failed (then no writer was made). Raises OSError as
        :class:`subprocess.Popen` does when ``request.cwd`` cannot be entered."""
        body = request.encode()
        read_fd, write_fd = os.pipe()
        try:
            with self._lock:
                sock = self._ensure()
                if sock is None:
                    return None
                server = self._popen
                try:
                    head = len(body).to_bytes(zygote.HEAD, "big")
                    socket.send_fds(sock, [head], [stdin_fd, log_fd, write_fd])
                    sock.sendall(body)
                except OSError as exc:
                    self._lose(f"cannot send it a request: {exc}")
                    return None
            os.close(write_fd)  # now only the server, and then its child, hold it
            write_fd = -1
            report = _read_report(read_fd, REPORT_TIMEOUT_S)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        words = report.split() if report is not None else []
        if len(words) == 2 and words[0] == b"E" and words[1].isdigit():
            errno = int(words[1])
            raise OSError(errno, os.strerror(errno), request.cwd)
        if len(words) == 2 and all(w.isdigit() for w in words):
            return int(words[0]), int(words[1])
        with self._lock:
            if self._popen is server:  # not one started since by another spawn
                self._lose("it did not answer in time" if report is None else "it made no writer")
        return None

    def _ensure(self) -> socket.socket | None:
        if self._popen is not None and self._popen.poll() is not None:
            self._lose(f"it ended with {self._popen.returncode}")
        if self._sock is not None:
            return self._sock
        if self._closed:
            return None
        if self._lost_at is not None and time.monotonic() - self._lost_at < self.restart_after:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._popen = subprocess.Popen(
                [self.python, "-I", "-S", str(zygote.__file__), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # a terminal's ^C is for the daemon, not the server
                cwd="/",  # it holds no directory of the daemon's
                # Not the daemon's secrets: each writer's /proc/<pid>/environ is this one.
                # The locale is kept: both ends must encode paths alike.
                env={k: v for k, v in os.environ.items() if k in _SERVER_ENV},
            )
        except OSError as exc:
            ours.close()
            self._lost_at = time.monotonic()
            log.debug("the log writers' fork server cannot start (%s): the wrapper spawns", exc)
            return None
        finally:
            theirs.close()
        # Every send is bounded: a stopped or stuck server fills the socket's buffer,
        # and a spawn waiting on it would hold the lock, and every other spawn, forever.
        ours.settimeout(REPORT_TIMEOUT_S)
        self._sock, self._lost_at = ours, None
        log.debug("the log writers' fork server runs as pid %d", self._popen.pid)
        return ours

    def _lose(self, why: str) -> None:
        """Give up on the server (killed if it still runs; the writers it forked run on)."""
        log.debug("lost the log writers' fork server (%s): the wrapper spawns", why)
        if self._popen is not None:
            self._popen.kill()  # nothing if it has been reaped
        self._drop()
        self._lost_at = time.monotonic()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=5)  # else reaped by a later poll, or init
            self._popen = None


def _read_report(fd: int, timeout: float) -> bytes | None:
    """The writer's line (b"" when the pipe closed with none: nothing holds it, so no
    writer was made); None on the timeout."""
    deadline = time.monotonic() + timeout
    got = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 64)
        if not chunk:
            break
        got += chunk
    return got
