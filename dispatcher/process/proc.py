"""The only module that starts subprocesses.

* :func:`run` runs a short command to completion and raises
  :class:`~dispatcher.errors.ProcessError` showing command, exit code, stdout
  and stderr when asked to check.
* :func:`spawn` starts a long-running child (an agent) in its own session so
  that :func:`kill_tree` can end it and everything it started, writes its exit
  status to a file through a tiny ``sh`` wrapper (so a daemon that is not its
  parent, after a restart, can still learn how it ended), and records the
  kernel start time so a recycled pid is never mistaken for it. Optional
  :class:`Limits` (address space, CPU time) bind the agent and everything it
  starts. Optionally the wrapper first joins a cgroup, then claims the spawn
  (:func:`take_claim`, :func:`claim_holder`: exactly once across a crash), and
  runs the agent under the log writer :mod:`dispatcher.process.logpipe` (:class:`LogCap`).
  Given the daemon's fork server (:class:`~dispatcher.process.forks.ForkServer`), a
  log writer is forked from it instead, which does what the wrapper does without
  a Python start-up of its own; when it cannot, the wrapper runs as before.

Nothing here knows about jobs or the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.errors import ProcessError
from dispatcher.process import cgroups, forks, zygote
from dispatcher.process.logcap import head_path

logger = logging.getLogger(__name__)

# `sh -c` runs the agent as a child and records how it ended. The agent's argv
# arrives as positional parameters ("$@"), so no argument is ever parsed by the
# shell. 128+N is the shell's convention for "killed by signal N". Shell
# builtins only, here and in the prelude: the agent's PATH may have no `mv`.
_WRAPPER = (
    '"$@"; code=$?; '
    # A reader never sees a half-written file: it reads only after this process has ended.
    'printf "%s\\n" "$code" > "$exit_file"; '
    'exit "$code"'
)

# Before the agent runs, the wrapper joins the job's cgroup (if given; before the
# claim, so that whoever sees the claim finds the whole tree in the cgroup) and
# then claims the spawn: an exclusive create (`set -C` is O_EXCL) of the claim
# file, holding its pid. If the file exists, a recovering daemon claimed it
# first (see :func:`take_claim`): the wrapper exits without running anything.
_PRELUDE = (
    'exit_file="$1"; claim="$2"; cgroup="$3"; shift 3; '
    'if [ -n "$cgroup" ]; then '
    '{ echo $$ > "$cgroup/cgroup.procs"; } 2>/dev/null || '
    'echo "[dispatcher] warning: cannot join the cgroup $cgroup: processes that leave'
    " the agent's session may outlive the job\" >&2; fi; "
    'if [ -n "$claim" ]; then set -C; '
    '{ echo $$ > "$claim"; } 2>/dev/null || exit 0; set +C; fi; '
)

# What a daemon writes into a claim file it took (a wrapper writes its pid; a writer
# forked by the fork server its pid and kernel start time).
DAEMON_CLAIM = "daemon"

# With limits, the agent runs as `(ulimit ...; exec "$@")`: the subshell sets
# the limits on itself and then becomes the agent, so they bind the agent and
# everything it starts but not the wrapper, whose bookkeeping (printf) must
# work even after the agent ran out of memory. Setting limits in the shell
# rather than in a `preexec_fn` keeps Python code out of the window between
# fork and exec, which is unsafe in a threaded daemon. If a limit cannot be set
# the agent does not run unlimited: the subshell exits with this status.
LIMITS_FAILED = 125
_LIMITED_RUN = (
    "( {commands} || {{ echo '[dispatcher] cannot set resource limits' >&2; exit {failed}; }}; "
    'exec "$@" )'
)

# RLIMIT_CPU's hard limit sits this far above the soft one: at the soft limit
# the kernel sends SIGXCPU (which ends the agent unless it handles it), at the
# hard one SIGKILL.
CPU_KILL_AFTER = 5


@dataclass(frozen=True)
class Limits:
    """Resource limits for an agent, applied to each process of its tree.

    They are POSIX rlimits: inherited by every process the agent starts, but
    counted per process, not for the tree as a whole (that needs cgroups). A
    limit above the daemon's own hard limit is lowered to it (a process cannot
    raise its hard limits, and the daemon's already binds its children).
    """

    # RLIMIT_AS (soft and hard), rounded down to whole KiB. This is address
    # space, not resident memory: runtimes that reserve much more than they use
    # need a generous value (Node.js 20 reserves ~0.7 GiB to print "hello" and
    # dies or hangs below ~1 GiB). Allocation beyond it fails (ENOMEM;
    # MemoryError in Python); nothing is killed by the kernel for it.
    memory_bytes: int | None = None
    # RLIMIT_CPU: CPU seconds (user + system) per process. SIGXCPU at this
    # soft limit, SIGKILL CPU_KILL_AFTER seconds of CPU later.
    cpu_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes is not None and self.memory_bytes < 1024:
            raise ValueError(f"memory_bytes must be at least 1024, not {self.memory_bytes}")
        if self.cpu_seconds is not None and self.cpu_seconds < 1:
            raise ValueError(f"cpu_seconds must be at least 1, not {self.cpu_seconds}")


def _within(value: int, hard: int) -> int:
    """``value`` lowered to the inherited hard limit ``hard`` (which may be unlimited)."""
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def ulimit_commands(limits: Limits) -> list[str]:
    """The ``ulimit`` commands (``sh`` builtins, POSIX plus -v) that apply ``limits``.

    Each soft limit is set before its hard one: lowering the hard limit below
    the current soft one fails (EINVAL), and the soft value is never above the
    inherited hard limit because both are lowered to it first. Values are
    integers formatted here, never text from a caller, so the commands are safe
    to put into the wrapper script.
    """
    commands: list[str] = []
    if limits.memory_bytes is None and limits.cpu_seconds is None:
        return commands
    # A limit ends agents with core-dumping signals (SIGXCPU; runtimes abort
    # when an allocation fails): with a core_pattern of "core" the dump would
    # land in the worktree and be committed with the agent's work. Soft only:
    # an agent that wants cores can raise it again.
    commands.append("ulimit -S -c 0")
    if limits.memory_bytes is not None:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        kib = _within(limits.memory_bytes, hard) // 1024
        commands += [f"ulimit -S -v {kib:d}", f"ulimit -H -v {kib:d}"]
    if limits.cpu_seconds is not None:
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        cpu_hard = _within(limits.cpu_seconds + CPU_KILL_AFTER, hard)
        cpu_soft = min(limits.cpu_seconds, cpu_hard)
        commands += [f"ulimit -S -t {cpu_soft:d}", f"ulimit -H -t {cpu_hard:d}"]
    return commands


@dataclass(frozen=True)
class LogCap:
    """Cap the agent's log while it writes (see :mod:`dispatcher.process.logpipe`)."""

    max_bytes: int  # the live log rotates before it would grow past this
    keep: int  # rotated copies (``agent.log.1`` ... ``agent.log.<keep>``)
    head_bytes: int  # how much of the log's start is kept in ``agent.log.head``


LOGPIPE = Path(__file__).with_name("logpipe.py")


def wrapper_script(
    limits: Limits | None = None, *, log_path: Path | None = None, log_cap: LogCap | None = None
) -> str:
    """The ``sh -c`` script that runs the agent (under ``limits``) and records its exit.

    With ``log_cap`` (and ``log_path``) the wrapper becomes (``exec``) the log
    writer :mod:`dispatcher.process.logpipe`, which runs the agent with its output
    through a pipe, caps the log and records the exit. Its paths and numbers
    are quoted here; the agent's argv stays in positional parameters.
    """
    commands = ulimit_commands(limits) if limits is not None else []
    if log_cap is None or log_path is None:
        if not commands:
            return _PRELUDE + _WRAPPER
        limited = _LIMITED_RUN.format(commands=" && ".join(commands), failed=LIMITS_FAILED)
        return _PRELUDE + _WRAPPER.replace('"$@"; code=$?', f"{limited}; code=$?", 1)
    inner = shlex.join(limits_shim(limits)) + ' "$@"'

    def quoted(*args: object) -> str:
        return " ".join(shlex.quote(str(a)) for a in args)

    # The exit file and the claim come from positional parameters, like the argv.
    writer = (
        f'{quoted(sys.executable, "-I", "-S", LOGPIPE)} "$exit_file" '
        f"{quoted(log_path, log_cap.max_bytes, log_cap.keep, log_cap.head_bytes)} "
        # Python may set LC_CTYPE at start (PEP 538): the writer puts back what we had.
        '"${LC_CTYPE+LC_CTYPE=$LC_CTYPE}"'
    )
    return f'{_PRELUDE}exec {writer} "$claim" -- {inner}'


def limits_shim(limits: Limits | None) -> list[str]:
    """What goes before the agent's argv under the log writer to apply ``limits``: a
    shell that sets them on itself and then becomes the agent (nothing without limits)."""
    commands = ulimit_commands(limits) if limits is not None else []
    if not commands:
        return []
    limited = _LIMITED_RUN.format(commands=" && ".join(commands), failed=LIMITS_FAILED)
    return ["/bin/sh", "-c", limited[2:-2], "dispatcher-limits"]  # the subshell's body


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def describe_failure(argv: Sequence[str], code: int, stdout: str, stderr: str) -> str:
    out = stdout.strip()
    err = stderr.strip()
    parts = [f"command {' '.join(argv)!r} exited {code}"]
    if err:
        parts.append(f"stderr: {err[-2000:]}")
    if out:
        parts.append(f"stdout: {out[-2000:]}")
    return "; ".join(parts)


def run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = 120,
    session: bool = False,
) -> Result:
    """Run ``argv`` to completion (never through a shell) and capture its output.

    ``session``: in a session (process group) of its own, the whole group killed on the
    timeout, so that what it started (git's ssh or remote helper) does not outlive it.
    """
    try:
        if session:
            proc = _run_in_session(argv, cwd=cwd, env=env, input=input, timeout=timeout)
        else:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=env if env is None or isinstance(env, dict) else dict(env),  # never written
                input=input,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL if input is None else None,
                check=False,
            )
    except OSError as exc:
        if cwd is not None and not os.path.isdir(cwd):
            raise ProcessError(f"working directory does not exist: {os.fspath(cwd)}") from exc
        if isinstance(exc, FileNotFoundError):
            raise ProcessError(f"command not found: {argv[0]!r}") from exc
        raise ProcessError(f"cannot execute {argv[0]!r}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(f"command {' '.join(argv)!r} timed out after {timeout}s") from exc
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise ProcessError(describe_failure(argv, proc.returncode, proc.stdout, proc.stderr))
    return result


def _run_in_session(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    input: str | None,
    timeout: float | None,
) -> subprocess.CompletedProcess[str]:
    """:func:`subprocess.run` in a new session; on the timeout its group is killed (and
    the child reaped) before :class:`subprocess.TimeoutExpired` is raised again."""
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env if env is None or isinstance(env, dict) else dict(env),
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as popen:
        try:
            out, err = popen.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)  # the session leader's pid is its pgid
            popen.kill()
            popen.communicate()  # every writer of the pipes is gone with the group
            raise
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(list(argv), popen.returncode, out, err)


@dataclass(frozen=True)
class Spawned:
    """A child started by :func:`spawn`: enough to supervise it, even from another process."""

    pid: int
    start_time: int  # kernel start time in clock ticks since boot (from /proc/<pid>/stat)
    exit_file: Path
    popen: subprocess.Popen[bytes] | None  # None: re-adopted, or forked by the fork server
    cgroup: Path | None = None  # the cgroup its wrapper joins, if any (see kill_tree)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks, or None if it does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22 overall: starttime


def is_alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` runs and is the same process (not a recycled pid) and not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and int(fields[19]) == start_time and fields[0] != "Z"


def find_program(argv0: str, *, cwd: Path, env: Mapping[str, str]) -> Path:
    """Where ``argv0`` is, as :func:`spawn` runs it (a path from ``cwd``, else looked up
    on ``env``'s PATH); raises :class:`ProcessError` with a one-line reason when it is
    not there or not executable."""
    if os.sep in argv0:
        resolved = Path(argv0) if os.path.isabs(argv0) else cwd / argv0
        if not resolved.is_file() or not os.access(resolved, os.X_OK):
            raise ProcessError(f"agent command not found or not executable: {argv0!r}")
        return resolved
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise ProcessError(f"agent command not found on PATH: {argv0!r}")
    return Path(found)


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    stdin_path: Path | None,
    log_path: Path,
    exit_file: Path,
    limits: Limits | None = None,
    claim_file: Path | None = None,
    cgroup: Path | None = None,
    log_cap: LogCap | None = None,
    fork_server: forks.ForkServer | None = None,
) -> Spawned:
    """Start ``argv`` in a new session, output appended to ``log_path``.

    ``limits`` bind the agent and every process it starts (see :class:`Limits`).
    Without ``log_cap`` the log is opened ``O_APPEND`` and grows uncapped; with
    it, the output goes through :mod:`dispatcher.process.logpipe`, which caps the log
    as it writes (rotating by rename to ``LOG.1`` … ``LOG.KEEP``).
    ``cgroup``: a cgroup (v2) directory the wrapper moves itself
    into before anything else. ``claim_file``: created exclusively by the
    wrapper, holding its pid, before the agent runs; if it exists already the
    agent never runs (see :func:`take_claim`). ``fork_server``: with ``log_cap``,
    the log writer is forked from it if it can (the :class:`Spawned` then has
    no ``popen``: it is not this process's child), else the wrapper starts it.

    Raises :class:`ProcessError` when the program does not exist or is not
    executable, so that callers can fail the job with that reason instead of
    learning it from an exit code 127.
    """
    find_program(argv[0], cwd=Path(cwd), env=env)
    with contextlib.suppress(FileNotFoundError):
        exit_file.unlink()
    if log_cap is not None:
        with contextlib.suppress(FileNotFoundError):
            head_path(log_path).unlink()  # an earlier run's head is not this one's
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_cap is not None and fork_server is not None:
        request = zygote.Request(
            argv=[*limits_shim(limits), *argv], env=dict(env), cwd=os.path.abspath(cwd),
            exit_file=os.path.abspath(exit_file), log_path=os.path.abspath(log_path),
            max_bytes=log_cap.max_bytes, keep=log_cap.keep, head_bytes=log_cap.head_bytes,
            claim=os.path.abspath(claim_file) if claim_file else "",
            cgroup=os.path.abspath(cgroup) if cgroup else "",
        )  # fmt: skip
        forked = None
        if request.encodable():
            with open(log_path, "ab") as out, open(stdin_path or os.devnull, "rb") as inp:
                forked = fork_server.spawn(request, inp.fileno(), out.fileno())
        if forked is not None:
            return Spawned(*forked, exit_file, None, cgroup)
        logger.debug("no log writer from the fork server: spawning through the wrapper")
    script = wrapper_script(limits, log_path=log_path, log_cap=log_cap)
    places = [str(exit_file), str(claim_file or ""), str(cgroup or "")]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "ab"))
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        popen = subprocess.Popen(
            ["/bin/sh", "-c", script, "dispatcher-agent", *places, *argv],
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    start = process_start_time(popen.pid)
    return Spawned(popen.pid, start if start is not None else 0, exit_file, popen, cgroup)


def take_claim(claim_file: Path) -> bool:
    """Claim a spawn for this daemon; False if its wrapper (or a daemon) claimed it first.

    The file appears with its content at once (written aside, then hard-linked,
    which fails if the name exists), so a reader never mistakes a daemon's
    claim for a wrapper's that is still being written. Once this returns True
    that spawn's wrapper can never run its agent.
    """
    return zygote.claim(str(claim_file), f"{DAEMON_CLAIM}\n")


def claim_holder(claim_file: Path, *, wait: float = 2.0) -> int | None:
    """The pid of the wrapper that claimed ``claim_file``; None if a daemon did, or
    if no agent ran from it nor ever will.

    A wrapper creates the file and then writes its pid, and runs the agent only
    after that: an empty file is polled for up to ``wait`` seconds, then the
    wrapper that is still writing it is looked for (:func:`find_spawn`); with
    none alive, it died before it could run anything.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            text = claim_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text == DAEMON_CLAIM:
            return None
        pid = _claimed_by(text)
        if pid is not None:
            return pid[0]
        if time.monotonic() >= deadline:
            return find_spawn(claim_file)
        time.sleep(0.02)


def _claimed_by(text: str) -> tuple[int, int | None] | None:
    """(pid, start time or None) from a claim's text: a wrapper's ``PID`` or a forked
    writer's ``PID START``; None if it is neither (empty: still being written)."""
    words = text.split()
    if not 1 <= len(words) <= 2 or not all(w.isdigit() for w in words):
        return None
    return int(words[0]), int(words[1]) if len(words) == 2 else None


def find_spawn(claim_file: Path) -> int | None:
    """A live process whose command line names ``claim_file`` (its wrapper), or None."""
    wanted = os.fsencode(claim_file)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _names(int(entry.name), wanted):
            return int(entry.name)
    return None


def runs_spawn(pid: int, claim_file: Path) -> int | None:
    """``pid``'s start time if it is the live wrapper (or log writer) of the spawn
    that claimed ``claim_file``, else None: a forked writer's claim holds its pid and
    start time; a wrapper's holds its pid, and its command line names the file."""
    start = process_start_time(pid)
    if start is None or not is_alive(pid, start):
        return None
    try:
        recorded = _claimed_by(claim_file.read_text())
    except OSError:
        recorded = None
    if recorded is not None and recorded[1] is not None:
        return start if recorded == (pid, start) else None
    return start if _names(pid, os.fsencode(claim_file)) else None


def _names(pid: int, wanted: bytes) -> bool:
    """True if ``pid`` lives (no zombie) and has ``wanted`` among its arguments."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    start = process_start_time(pid)
    return wanted in cmdline and start is not None and is_alive(pid, start)


def read_exit_file(exit_file: Path) -> int | None:
    """The exit status the wrapper recorded, or None if it recorded none."""
    try:
        return int(exit_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def wait(child: Spawned, timeout: float | None) -> int | None:
    """Wait for ``child`` to end; its exit status, or None on timeout.

    Works for our own children (``popen``) and for re-adopted ones (polls the
    pid and then reads the exit file). A negative status means killed by that
    signal before the wrapper could record anything.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if child.popen is not None:
        try:
            code = child.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        recorded = read_exit_file(child.exit_file)
        return recorded if recorded is not None else code
    delay = 0.01
    while is_alive(child.pid, child.start_time):
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    recorded = read_exit_file(child.exit_file)
    return recorded if recorded is not None else -signal.SIGKILL


def kill_tree(
    pid: int, start_time: int | None = None, *, grace: float = 3.0, cgroup: Path | None = None
) -> None:
    """SIGTERM the child's whole process group, then SIGKILL after ``grace`` seconds.

    ``start_time`` guards against a recycled pid: if given and it no longer
    matches, nothing is signalled. The agent was started as a session leader,
    so its process group id is its pid. ``cgroup``: the cgroup the child's
    wrapper joined (see :func:`spawn`); whether the group still has a live
    member is then read from it instead of from every process on the machine.
    """
    if start_time is not None and not is_alive(pid, start_time):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    delay = 0.005
    while True:
        if not _group_alive(pid, cgroup):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# How many times _group_alive looked through every process (tests count them).
proc_scans = 0


def _group_alive(pgid: int, cgroup: Path | None = None) -> bool:
    """True while the process group ``pgid`` has a member that is not a zombie.

    The group's zombies still count for ``killpg``: a sandboxed agent always leaves
    one for a while (bubblewrap's init inside the box, which the machine's init
    reaps when it gets to it). Telling them apart reads the members' ``stat``: the
    live members of ``cgroup`` when it knows them (a process can leave a cgroup only
    by moving itself to another, which needs write access to the cgroup tree),
    otherwise every process.
    """
    global proc_scans
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = cgroups.live_pids(cgroup) if cgroup is not None else None
    if members is None:
        proc_scans += 1
        with os.scandir("/proc") as entries:
            members = [int(e.name) for e in entries if e.name.isdigit()]
    key = str(pgid).encode()
    for pid in members:
        try:
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            raw = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        # Field 2 (comm) may contain spaces and parentheses: split after the last ")".
        state, _ppid, group = raw[raw.rindex(b")") + 2 :].split(b" ", 3)[:3]
        if group == key and state != b"Z":
            return True
    return False


def signal_of(code: int | None) -> int | None:
    """The signal that ended a process, from a status as :func:`wait` returns it.

    Negative: killed before the wrapper could record anything. 128+N where N is
    a real signal: the shell's report of a child killed by N. Anything else
    (including 255) is a plain exit code.
    """
    if code is None:
        return None
    if code < 0:
        return -code
    if code > 128 and (code - 128) in signal.valid_signals():
        return code - 128
    return None


def describe_status(code: int | None) -> str:
    """'exit 3', 'signal 9 (SIGKILL)' from a status as :func:`wait` returns it."""
    if code is None:
        return "unknown"
    sig = signal_of(code)
    if sig is None:
        return f"exit {code}"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"signal {sig} ({name})"
