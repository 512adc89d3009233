"""Run an agent with its output through a pipe into a capped, rotated log.

Started by the agent wrapper (:func:`dispatcher.process.proc.spawn`) in the agent's own
session as ``python -I -S logpipe.py EXIT_FILE LOG MAX_BYTES KEEP HEAD_BYTES
CTYPE CLAIM -- ARGV...``: standard library only, no ``dispatcher`` import, so it
starts fast and outlives a daemon crash like the agent does. Or forked, ready,
from the daemon's fork server (:mod:`dispatcher.process.zygote`), which runs
:func:`run` in each child: the same code, without a start-up of its own.

* The agent (``ARGV``) is its child; its stdout and stderr go into one pipe that
  this process appends to ``LOG``, unbuffered. Before a write would take
  ``LOG`` over ``MAX_BYTES`` it rotates by rename: ``LOG.1`` is the newest copy, up to
  ``LOG.KEEP``; ``LOG`` starts again with one ``[dispatcher] log rotated`` line.
  So the log and its copies never hold more than ``(KEEP + 1) * MAX_BYTES`` (plus
  the daemon's own notes), however fast the agent writes: a full pipe blocks it.
* Before the first rotation the first ``HEAD_BYTES`` of ``LOG`` (where agents
  print their session id) are kept in ``LOG.head``.
* When the agent ends, what it wrote is drained from the pipe (what processes it
  left behind write afterwards is not waited for: the supervisor kills them),
  its status goes to ``EXIT_FILE`` (the shell's convention: 128+N when killed by
  signal N) and this process exits with it.
* SIGTERM, SIGINT and SIGHUP are ignored here (not in the agent): a cancel
  signals the whole process group, and the agent's last words still reach the
  log and its status the exit file. One that comes before the agent is started is
  held until it is, then passed on to it (it would otherwise be lost, and the agent
  run until the supervisor's grace ran out).

``CTYPE`` is ``LC_CTYPE=<value>`` as the wrapper had it, or empty if it had
none: the agent gets that, not what Python's locale coercion (PEP 538) set here.
``CLAIM`` is not used here; it is in the command line so that a recovering
daemon can recognise this process as the spawn that wrote it.
"""

from __future__ import annotations

# ``_signal``, not ``signal`` (which imports enum), and no contextlib: this process
# starts with every job, and each import costs start-up time.
import _signal as signal  # type: ignore[import-not-found]
import os
import select
import sys

_READ = 1 << 16
_CANCEL = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_RESET = (signal.SIGPIPE, signal.SIGXFSZ, *_CANCEL)


def rotated(log: str, n: int) -> str:
    return f"{log}.{n}"


class CappedLog:
    """Appends to ``path``; rotates before it would grow past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int, keep: int, head_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.head_bytes = min(head_bytes, max_bytes)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - self.size
            if len(view) > room:
                # The daemon appends notes too: trust the file, not our count, to rotate.
                self.size = os.fstat(self.fd).st_size
                room = self.max_bytes - self.size
            if len(view) <= room:
                self._write_all(view)
                return
            # Cut at the last line end that fits; mid-line only when none does and the
            # file is less than half full (rotating it would keep a copy of little).
            take = bytes(view[: max(room, 0)]).rfind(b"\n") + 1 if room > 0 else 0
            if take == 0 and self.size < self.max_bytes // 2:
                take = max(room, 0)
            if take:
                self._write_all(view[:take])
                view = view[take:]
            self.rotate()

    def write_or_drop(self, data: bytes) -> None:
        """:meth:`write`, but a failing disk drops the output instead of the agent: it
        keeps running (its pipe is still read) and the log is reopened on the next write."""
        try:
            self.write(data)
        except OSError:
            if self.fd >= 0:
                try:  # noqa: SIM105
                    os.close(self.fd)
                except OSError:
                    pass
                self.fd = -1
            try:
                self.fd = self._open()
                self.size = os.fstat(self.fd).st_size
            except OSError:
                pass

    def _write_all(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            self.size += n
            view = view[n:]

    def _marker(self) -> bytes:
        name = os.path.basename(rotated(self.path, 1))
        note = f"older output in {name}" if self.keep else "older output dropped"
        return f"[dispatcher] log rotated: {note}\n".encode()

    def rotate(self) -> None:
        self._keep_head()
        os.close(self.fd)
        self.fd = -1
        if self.keep:
            for n in range(self.keep - 1, 0, -1):
                try:  # noqa: SIM105
                    os.replace(rotated(self.path, n), rotated(self.path, n + 1))
                except FileNotFoundError:
                    pass
            os.replace(self.path, rotated(self.path, 1))
        else:
            os.unlink(self.path)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self._write_all(memoryview(self._marker()))

    def _keep_head(self) -> None:
        head = f"{self.path}.head"
        if os.path.exists(head):
            return
        with open(self.path, "rb") as src:
            data = src.read(self.head_bytes)
        tmp = f"{head}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, head)


def _status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _drain(fd: int, log: CappedLog) -> None:
    """What is in the pipe now, without waiting for more (left-behind writers may hold it)."""
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, _READ):
            log.write_or_drop(chunk)
    except BlockingIOError:
        pass


def pump(read_fd: int, pid: int, log: CappedLog) -> int:
    """Copy the pipe into ``log`` until the agent ``pid`` ends; its wait status."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None  # an old kernel: poll for the exit instead
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    open_pipe, status = True, 0
    while True:
        ready = {fd for fd, _ in poller.poll(None if pidfd is not None else 200)}
        if read_fd in ready and open_pipe:
            chunk = os.read(read_fd, _READ)
            if chunk:
                log.write_or_drop(chunk)
            else:  # every writer closed it: only the exit is left to wait for
                poller.unregister(read_fd)
                open_pipe = False
        if pidfd is None or pidfd in ready or not open_pipe:
            done, status = os.waitpid(pid, 0 if (pidfd in ready or not open_pipe) else os.WNOHANG)
            if done:
                break
    if open_pipe:
        _drain(read_fd, log)
    return status


def _ignore_cancels(was: set[int]) -> list[int]:
    """Ignore the cancel signals from now on; those that came while they were
    blocked, in the order of :data:`_CANCEL`."""
    pending = signal.sigpending()
    for sig in _CANCEL:
        signal.signal(sig, signal.SIG_IGN)  # drops what is pending, too
    signal.pthread_sigmask(signal.SIG_SETMASK, was)
    return [sig for sig in _CANCEL if sig in pending]


def run(
    argv: list[str], env: dict[str, str], exit_file: str, log_path: str,
    max_bytes: int, keep: int, head_bytes: int,
) -> int:  # fmt: skip
    """Run the agent ``argv`` with ``env`` (its program looked up on this process's
    PATH, which the caller sets to the agent's), its output capped into ``log_path``;
    its status goes to ``exit_file`` and is returned. Also the fork server's
    (:mod:`dispatcher.process.zygote`) children run this."""
    # Blocked, not yet ignored: a cancel that comes before the agent exists stays
    # pending here and is passed on to it (ignoring it would drop it, and the agent
    # would run until the supervisor's grace ran out). One that comes after reaches
    # the agent itself: it is in this process group.
    was = signal.pthread_sigmask(signal.SIG_BLOCK, _CANCEL)
    log = CappedLog(log_path, max_bytes, keep, head_bytes)
    read_fd, write_fd = os.pipe()
    try:
        pid = os.posix_spawnp(
            argv[0], argv, env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, write_fd, 1),
                (os.POSIX_SPAWN_DUP2, write_fd, 2),
            ],
            setsigmask=(),
            setsigdef=_RESET,
        )  # fmt: skip
    except OSError as exc:
        _ignore_cancels(was)
        log.write(f"[dispatcher] cannot start the agent: {exc}\n".encode())
        code = 127
    else:
        for sig in _ignore_cancels(was):
            os.kill(pid, sig)
        os.close(write_fd)
        code = _status(pump(read_fd, pid, log))
    # Builtin-free bookkeeping: a reader reads the exit file only after we have ended.
    with open(exit_file, "w") as fh:
        fh.write(f"{code}\n")
    return code


def main(args: list[str]) -> int:
    if len(args) < 9 or args[7] != "--":
        print("usage: logpipe.py EXIT LOG MAX KEEP HEAD CTYPE CLAIM -- ARGV...", file=sys.stderr)
        return 2
    exit_file, log_path, max_bytes, keep, head_bytes, ctype, _claim, _, *argv = args
    env = dict(os.environ)
    env.pop("LC_CTYPE", None)
    if ctype.startswith("LC_CTYPE="):
        env["LC_CTYPE"] = ctype.removeprefix("LC_CTYPE=")
    return run(argv, env, exit_file, log_path, int(max_bytes), int(keep), int(head_bytes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
