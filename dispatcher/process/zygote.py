"""The log writer's fork server ("zygote"): agents start without a Python start-up of their own.

Every agent runs under the log writer (:mod:`dispatcher.process.logpipe`), a Python
process; started as ``python -I -S logpipe.py`` for each agent, its interpreter's
start-up was most of a spawn's time and CPU. Instead one long-lived process per
daemon, this module run as ``python -I -S zygote.py FD``, forks a ready writer for
each spawn. The daemon talks to it through :class:`dispatcher.process.forks.ForkServer`
over a Unix socket (``FD``, one end of a socket pair), and spawns through the
``sh`` wrapper whenever it cannot.

A request is 8 bytes of length, carrying three fds (the agent's stdin, the log
opened for appending, the write end of a pipe made for this request's report),
then that many bytes: :meth:`Request.encode`. For each, the server forks a child
that does what the wrapper and the writer do:

1. a new session (the daemon ends the agent's tree by its process group); stdin
   and the log become fds 0, 1 and 2; the agent's working directory;
2. it writes ``PID START`` (its kernel start time) to the report pipe and closes
   it (``E ERRNO`` when the directory cannot be entered). The daemon reads that,
   or an end of file with nothing: then no child holds the pipe, so none was made
   (the server died or could not fork), and the daemon takes the wrapper. So a
   request never starts two agents;
3. it joins the cgroup, then claims the spawn as the wrapper does (an exclusive
   create: :func:`claim`; when a recovering daemon claimed it first nothing runs).
   The claim holds ``PID START``: how a recovering daemon knows the writer (a
   wrapper's command line names the claim file; a forked child's is the server's);
4. it runs the agent with :func:`logpipe.run` (the writer's own code, imported
   from beside this file) and exits with its status.

The server reaps its children as they end (on SIGCHLD; each child sets it back
before anything else): no zombies pile up, and their CPU time (with their agents')
is counted in the server's children's time in ``/proc/<pid>/stat``, where a
benchmark reads it (ignoring SIGCHLD would have the kernel reap them and drop that).
They run in sessions of their own and outlive the server and the daemon. The
server exits when the daemon's end of the socket closes (a stop or a crash).
It has one thread: the daemon, which has many, never forks a writer itself.

Standard library only, and as little of it as will do: every module loaded here
is in every fork (``socket`` alone, with ``enum`` and ``selectors``, made a fork
and exit cost twice the CPU), hence ``_socket`` and ``_signal``.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]
import _socket
import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: every import is in every fork
    from collections.abc import Callable

    Run = Callable[[list[str], dict[str, str], str, str, int, int, int], int]

HEAD = 8  # the request's length, big-endian
FDS = 3  # stdin, log, report
_FD_SIZE = 4  # a C int in SCM_RIGHTS


class Request:
    """What a forked writer needs (its fds travel beside it)."""

    __slots__ = (
        "argv", "cgroup", "claim", "cwd", "env", "exit_file", "head_bytes", "keep",
        "log_path", "max_bytes",
    )  # fmt: skip

    def __init__(
        self, *, argv: list[str], env: dict[str, str], cwd: str, exit_file: str,
        log_path: str, max_bytes: int, keep: int, head_bytes: int, claim: str, cgroup: str,
    ) -> None:  # fmt: skip
        """``claim``, ``cgroup``: "" for none. Paths absolute (the server's working
        directory is not the daemon's)."""
        self.argv, self.env, self.cwd = argv, env, cwd
        self.exit_file, self.log_path = exit_file, log_path
        self.max_bytes, self.keep, self.head_bytes = max_bytes, keep, head_bytes
        self.claim, self.cgroup = claim, cgroup

    def encodable(self) -> bool:
        """No argument or variable holds a NUL and every name is a name (no ``=``), as
        :class:`subprocess.Popen` requires (it raises ValueError otherwise): a request
        that is not goes through the wrapper, to fail there as it always did."""
        texts = [*self.argv, *self.env.values(), *self.env]
        return not any("\0" in t for t in texts) and all(k and "=" not in k for k in self.env)

    def encode(self) -> bytes:
        """NUL-separated fields (:meth:`encodable`): the paths and numbers, the argv's
        length, the argv, then the environment as ``KEY=VALUE``."""
        fields = [
            self.cwd, self.exit_file, self.log_path, str(self.max_bytes), str(self.keep),
            str(self.head_bytes), self.claim, self.cgroup, str(len(self.argv)), *self.argv,
            *(f"{k}={v}" for k, v in self.env.items()),
        ]  # fmt: skip
        return b"\0".join(os.fsencode(f) for f in fields)

    @classmethod
    def decode(cls, body: bytes) -> Request:
        f = [os.fsdecode(b) for b in body.split(b"\0")]
        n = int(f[8])
        env = dict(kv.split("=", 1) for kv in f[9 + n :])
        return cls(
            cwd=f[0], exit_file=f[1], log_path=f[2], max_bytes=int(f[3]), keep=int(f[4]),
            head_bytes=int(f[5]), claim=f[6], cgroup=f[7], argv=f[9 : 9 + n], env=env,
        )  # fmt: skip


def claim(path: str, content: str) -> bool:
    """Create ``path`` holding ``content``, only if it does not exist; False if it did.

    The file appears with its content at once (written aside, then hard-linked,
    which fails if the name exists), so a reader never sees it half-written.
    """
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def own_start_time() -> int:
    """This process's kernel start time in clock ticks (field 22 of /proc/self/stat)."""
    with open("/proc/self/stat", "rb") as fh:
        raw = fh.read()
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


# ---------------------------------------------------------------- the server


def serve(sock: _socket.socket, run: Run) -> None:
    """Fork a writer (running ``run``, :func:`logpipe.run`) for each request until the
    daemon's end of ``sock`` closes."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as in the wrapper, until the writer runs
    gc.freeze()  # a child's collections leave the server's objects (and pages) alone
    while True:
        got = _receive(sock)
        if got is None:
            return
        request, fds = got
        try:
            pid = os.fork()
        except OSError:
            pid = -1  # the report pipe closes unwritten: the daemon takes the wrapper
        if pid == 0:
            _child(request, fds, run)
        for fd in fds:
            os.close(fd)


def _reap(_signum: int, _frame: object) -> None:
    """Reap every child that has ended (a blocked ``recvmsg`` is resumed after this)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _receive(sock: _socket.socket) -> tuple[Request, list[int]] | None:
    """The next request and its fds; None at the end (or on a request not understood:
    the stream cannot be trusted after it)."""
    fds: list[int] = []
    try:
        head, ancillary, _flags, _addr = sock.recvmsg(HEAD, _socket.CMSG_SPACE(FDS * _FD_SIZE))
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(data) - len(data) % _FD_SIZE
                fds += [
                    int.from_bytes(data[i : i + _FD_SIZE], sys.byteorder)
                    for i in range(0, usable, _FD_SIZE)
                ]
        while head and len(head) < HEAD:
            more = sock.recv(HEAD - len(head))
            if not more:
                break
            head += more
        if len(head) < HEAD or len(fds) != FDS:
            raise ValueError("no request")
        size = int.from_bytes(head, "big")
        body = bytearray()
        while len(body) < size:
            chunk = sock.recv(min(size - len(body), 1 << 20))
            if not chunk:
                raise ValueError("a cut request")
            body += chunk
        return Request.decode(bytes(body)), fds
    except (OSError, ValueError, IndexError):
        for fd in fds:
            os.close(fd)
        return None


def _child(request: Request, fds: list[int], run: Run) -> None:
    """A forked writer: session, fds, report, cgroup, claim, then the agent. Never
    returns (it ends with ``os._exit``)."""
    code = 127
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the writer waits for its agent
        stdin_fd, log_fd, report_fd = fds
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        try:
            os.chdir(request.cwd)
        except OSError as exc:
            os.write(report_fd, f"E {exc.errno}\n".encode())
            os._exit(code)
        me = f"{os.getpid()} {own_start_time()}\n"
        os.write(report_fd, me.encode())
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the report, the server's socket, ...
        if request.cgroup:
            _join(request.cgroup)
        if request.claim:
            try:
                if not claim(request.claim, me):
                    os._exit(0)  # a recovering daemon claimed it first: nothing runs
            except OSError:
                os._exit(0)  # as the wrapper does: no claim, no agent
        os.environ.clear()
        os.environ.update(request.env)  # the agent's program is looked up on its PATH
        code = run(
            request.argv, request.env, request.exit_file, request.log_path,
            request.max_bytes, request.keep, request.head_bytes,
        )  # fmt: skip
    except BaseException as exc:
        try:
            os.write(2, f"[dispatcher] the log writer failed: {exc!r}\n".encode())
            # Its status, as the wrapper's shell would have recorded it (127: not run);
            # an exit file the writer wrote already is kept.
            fd = os.open(request.exit_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, f"{code}\n".encode())
            os.close(fd)
        except BaseException:  # noqa: S110
            pass
    finally:
        os._exit(code)


def _join(cgroup: str) -> None:
    """Move this process into ``cgroup``, or say in the log why not (as the wrapper does)."""
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError:
        os.write(
            2,
            f"[dispatcher] warning: cannot join the cgroup {cgroup}: processes that leave"
            " the agent's session may outlive the job\n".encode(),
        )


def main(args: list[str]) -> int:
    if len(args) != 1 or not args[0].isdigit():
        print("usage: zygote.py FD", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import logpipe  # type: ignore[import-not-found]  # the writer beside this file, not a copy

    serve(_socket.socket(fileno=int(args[0])), logpipe.run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
