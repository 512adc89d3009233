"""Agents in a box: what a job's processes may see, enforced with bubblewrap.

Knows paths, not jobs or the database. The caller says what to hide (the state
dir, every registered checkout) and what to give back (the worktree, the git
dir, the prompt and summary files, ``link:`` targets); :meth:`Sandbox.wrap`
turns an argv into ``[bwrap, ...options..., "--", *argv]``.

The view (see docs/agents.md, "What an agent can see"):

* the whole system as the user sees it (``--bind / /``): tools, HOME with the
  agent's own credentials and caches, the network;
* a new pid namespace with a fresh ``/proc``: with the host's ``/proc`` an
  agent reads any same-user process's files through ``/proc/<pid>/root``
  (the daemon's token included) and its ``environ``; a fresh ``/dev``: no
  disks to read raw; no capabilities (``--cap-drop ALL``, which matters when
  the daemon runs as root: otherwise it could unmount what hides the state);
* the hidden paths replaced by empty tmpfs (a file by ``/dev/null``), then the
  given paths bound back at the same place. Deeper paths are mounted after
  shallower ones, so the more specific rule wins whichever way paths nest.
* inside what is given back, what the daemon's own git would obey is
  read-only: the git dir's ``config`` and ``hooks``, its ``HEAD`` and ``index``,
  its ``worktrees/`` (every job's admin dir) but for the job's own admin dir,
  whose ``commondir``, ``gitdir`` and ``config.worktree`` are read-only again,
  the worktree's ``.git`` file, the user's global git config. An agent that could
  write those could make the daemon run its code outside the box (in its own
  worktree or another job's).

Modes (``DISPATCHER_SANDBOX``): ``auto`` uses bubblewrap when a one-time probe
works and otherwise runs unsandboxed (with a line in each job log);
``bwrap`` requires it (:class:`SandboxUnavailable`); ``off`` never uses it.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dispatcher.errors import DispatcherError, ProcessError
from dispatcher.process import proc

MODES = ("auto", "bwrap", "off")

# Options of every sandboxed run, and of the probe that decides whether bwrap works here.
# No --die-with-parent: it would SIGKILL the agent as soon as its wrapper shell ends
# on the SIGTERM of a stop, cutting short the grace period kill_tree gives it.
BASE_OPTIONS = (
    "--unshare-pid",
    "--cap-drop", "ALL",
    "--bind", "/", "/",
    "--proc", "/proc",
    "--dev", "/dev",
)  # fmt: skip

DOCS = "see docs/agents.md#what-an-agent-can-see"

# A stop signals the job's whole process group, bwrap's own processes included. bwrap
# would die of the SIGTERM at once and the log writer, seeing its child end, would
# record 143 and close the pipe under the agent's trap handler. So bwrap runs with
# the stop signals ignored (a disposition that survives exec) and the agent inside
# gets them back; SIGKILL after the grace (and the job's cgroup) still ends them all.
STOP_SIGNALS = "TERM,INT,HUP"


def _env_program() -> str:
    return _which_env(os.environ.get("PATH", os.defpath))


@functools.cache
def _which_env(path: str) -> str:
    """``env`` on the daemon's PATH ``path`` (looked up once per PATH: twice per wrap)."""
    return shutil.which("env", path=path) or "/usr/bin/env"


def outside(program: str) -> list[str]:
    """What runs bwrap: ``env`` with the stop signals ignored (see :data:`STOP_SIGNALS`)."""
    return [_env_program(), f"--ignore-signal={STOP_SIGNALS}", program]


def inside() -> list[str]:
    """What runs the boxed command: ``env`` giving it the stop signals back."""
    return [_env_program(), f"--default-signal={STOP_SIGNALS}", "--"]


class SandboxUnavailable(DispatcherError):
    """``DISPATCHER_SANDBOX=bwrap`` and bubblewrap cannot run here."""

    code = "sandbox_unavailable"


@dataclass(frozen=True)
class View:
    """What a sandboxed process sees besides the system: paths are host paths,
    seen at the same place inside."""

    workdir: Path
    hide: tuple[Path, ...] = ()  # directories (emptied) and files (made empty)
    writable: tuple[Path, ...] = ()  # given back read-write; skipped when missing
    read_only: tuple[Path, ...] = ()  # given back read-only; skipped when missing
    files: tuple[Path, ...] = ()  # given back read-write, created empty when missing
    checkouts: int = field(default=0, compare=False)  # for the log line

    def with_files(self, *paths: Path) -> View:
        return replace(self, files=(*self.files, *paths))


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


class Resolver:
    """Real paths (as :func:`os.path.realpath` gives them) and whether they exist, each
    component looked up once: a view's paths share most of their ancestors (the git
    dir's control files, the job's admin dir), so a path under one already resolved
    costs one ``lstat``. Meant for one :meth:`Sandbox.wrap`: it remembers what it saw."""

    def __init__(self) -> None:
        self._real: dict[str, str] = {"/": "/"}
        self._stat: dict[str, os.stat_result | None] = {}
        self.lookups = 0  # lstat and stat calls made (tests count them)

    def real(self, path: Path | str) -> Path:
        return Path(self._resolve(os.fspath(path)))

    def real_str(self, path: Path | str) -> str:
        """:meth:`real` as a string (no :class:`Path` made: a wrap resolves ~25 paths)."""
        return self._resolve(os.fspath(path))

    def _resolve(self, path: str) -> str:
        known = self._real.get(path)
        if known is not None:
            return known
        parent, name = os.path.split(path)
        if not os.path.isabs(path) or not name or name in (".", "..") or "//" in path:
            real = os.path.realpath(path)
        else:
            candidate = os.path.join(self._resolve(parent), name)
            self.lookups += 1
            try:
                st: os.stat_result | None = os.lstat(candidate)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(candidate)  # follow the link (and those it leads to)
            else:
                real = candidate
                self._stat[real] = st  # not a link: what lstat saw is what is there
        self._real[path] = real
        return real

    def _status(self, real: Path | str) -> os.stat_result | None:
        key = os.fspath(real)
        if key not in self._stat:
            self.lookups += 1
            try:
                self._stat[key] = os.stat(key)
            except OSError:
                self._stat[key] = None
        return self._stat[key]

    def is_dir(self, real: Path | str) -> bool:
        st = self._status(real)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def exists(self, real: Path | str) -> bool:
        return self._status(real) is not None


def _global_git_configs(env: Mapping[str, str]) -> list[Path]:
    """The user's git config files that git (the daemon's too) reads from HOME."""
    paths = []
    if env.get("GIT_CONFIG_GLOBAL"):
        paths.append(Path(env["GIT_CONFIG_GLOBAL"]))
    home = env.get("HOME")
    if home:
        paths.append(Path(home) / ".gitconfig")
    xdg = env.get("XDG_CONFIG_HOME") or (str(Path(home) / ".config") if home else "")
    if xdg:
        paths.append(Path(xdg) / "git")
    return paths


# In the repository's git dir, what the agent may not change: what git obeys (config,
# hooks), the checkout's own HEAD and index (the agent has its worktree's), and every
# worktree's admin dir (``worktrees/``: the job's own is given back, see job_view), where
# another job's ``commondir`` could point the daemon's git in that worktree at a
# config of the agent's.
GIT_DIR_PROTECTED = (
    "config",
    "config.worktree",
    "hooks",
    "commondir",
    "HEAD",
    "index",
    "worktrees",
)


def job_view(
    *,
    state_dir: Path,
    checkouts: Iterable[Path],
    worktree: Path,
    git_dir: Path | None,
    admin_dir: Path | None = None,
    links: Iterable[Path] = (),
    read_only: Iterable[Path] = (),
    database: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> View:
    """The view of a job's process: the state dir, every checkout (and the database
    file, when it lives elsewhere) hidden; the worktree, the repository's git dir
    (``git_dir``: the agent commits) and ``links`` (``link:`` targets) writable;
    ``read_only`` (the prompt file) and git's own control files read-only (in
    ``git_dir``, see :data:`GIT_DIR_PROTECTED`, and ``admin_dir``, the worktree's own
    git dir under it, which is writable but for its ``commondir``, ``gitdir`` and
    ``config.worktree``)."""
    env = os.environ if env is None else env
    repos = list(checkouts)
    hidden = [state_dir, *repos]
    if database is not None and _real(state_dir) not in _real(database).parents:
        hidden += [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    writable = [worktree, *links]
    protected = [worktree / ".git", *_global_git_configs(env), *read_only]
    if admin_dir is not None:
        writable.append(admin_dir)  # its own HEAD, index and logs, under a read-only parent
        protected += [admin_dir / name for name in ("commondir", "config.worktree", "gitdir")]
    if git_dir is not None:
        writable.append(git_dir)
        protected += [git_dir / name for name in GIT_DIR_PROTECTED]
    return View(
        workdir=worktree,
        hide=tuple(hidden),
        writable=tuple(writable),
        read_only=tuple(protected),
        checkouts=len(repos),
    )


def _depth(real: str) -> int:
    """How many components a real (absolute, normalized) path has, ``/`` included: what
    ``len(Path(real).parts)`` says, without making the Path."""
    return 1 if real == "/" else real.count("/") + 1


def mount_options(view: View, resolver: Resolver | None = None) -> list[str]:
    """bwrap's options that hide and give back ``view``'s paths, shallow before deep
    (at one path, giving back wins over hiding). Missing paths are left out: bwrap
    would create them on the host (``/`` is bound read-write)."""
    r = resolver or Resolver()
    ops: list[tuple[int, int, list[str]]] = []
    for path in {r.real_str(p) for p in view.hide}:
        if r.is_dir(path):
            ops.append((_depth(path), 0, ["--tmpfs", path]))
        elif r.exists(path):
            ops.append((_depth(path), 0, ["--ro-bind", "/dev/null", path]))
    for path in {r.real_str(p) for p in (*view.writable, *view.files)}:
        if r.exists(path):
            ops.append((_depth(path), 1, ["--bind", path, path]))
    for path in {r.real_str(p) for p in view.read_only}:
        if r.exists(path):
            ops.append((_depth(path), 2, ["--ro-bind", path, path]))
    ops.sort(key=lambda op: (op[0], op[1], op[2]))
    return [arg for _, _, args in ops for arg in args]


def _under(path: str, roots: Iterable[str]) -> str | None:
    """The deepest of ``roots`` (real paths) that holds the real ``path`` (or is it), or
    None."""
    holding = [r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")]
    return max(holding, key=_depth) if holding else None


def _check_visible(program: Path, view: View, r: Resolver) -> None:
    """Refuse a program the view hides: bwrap would only say "No such file"."""
    real = os.path.realpath(program)
    hidden = _under(real, [r.real_str(p) for p in view.hide])
    given = _under(real, [r.real_str(p) for p in (*view.writable, *view.read_only, *view.files)])
    if hidden is not None and (given is None or _depth(given) < _depth(hidden)):
        raise ProcessError(
            f"agent command {str(program)!r} is inside {hidden}, which the sandbox hides "
            f"from agents ({DOCS}); install it elsewhere or set DISPATCHER_SANDBOX=off"
        )


@dataclass(frozen=True)
class Sandbox:
    """How this daemon boxes agents: the mode, and bwrap if it is used."""

    mode: str
    program: str | None = None  # bwrap's path when it is used
    problem: str = ""  # why bubblewrap cannot be used here ("" if it can, or off)

    @property
    def active(self) -> bool:
        return self.program is not None

    def note(self, view: View) -> str:
        """The job-log line saying how (or whether) the job is boxed."""
        if self.active:
            return (
                f"sandbox: bubblewrap ({self.program}): the state dir and {view.checkouts} "
                f"registered checkout(s) are hidden; this job sees its worktree, the git "
                f"dir, its prompt and its link: targets there ({DOCS})"
            )
        if self.mode == "off":
            return (
                "sandbox: off (DISPATCHER_SANDBOX=off): this job can read all you can, "
                "the daemon's token and state included"
            )
        if self.mode == "bwrap":
            return f"sandbox: required (DISPATCHER_SANDBOX=bwrap) but {self.problem}"
        return (
            f"sandbox: none, {self.problem}: this job runs unsandboxed and can read the "
            "daemon's token and state; install bubblewrap, or set DISPATCHER_SANDBOX=off "
            "to run unsandboxed on purpose"
        )

    def wrap(self, argv: Sequence[str], view: View, *, env: Mapping[str, str]) -> list[str]:
        """``argv`` run inside ``view``; unchanged when the sandbox is not used.

        Raises :class:`SandboxUnavailable` in ``bwrap`` mode when bubblewrap cannot
        run, and :class:`ProcessError` when ``argv[0]`` is missing or hidden.
        ``view.files`` are created (empty) first: bwrap binds only what exists.
        """
        if self.mode == "bwrap" and not self.active:
            raise SandboxUnavailable(
                f"DISPATCHER_SANDBOX=bwrap but {self.problem}; install bubblewrap "
                "(Debian: apt-get install bubblewrap) or set DISPATCHER_SANDBOX=auto"
            )
        if not self.active:
            return list(argv)
        assert self.program is not None
        program = proc.find_program(argv[0], cwd=view.workdir, env=env)
        for path in view.files:  # before anything is resolved: they exist from now on
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        resolver = Resolver()
        _check_visible(program, view, resolver)
        return [
            *outside(self.program), *BASE_OPTIONS, *mount_options(view, resolver),
            "--chdir", str(view.workdir), "--", *inside(), *argv,
        ]  # fmt: skip


def probe(program: str) -> tuple[str | None, str]:
    """(bwrap's path, "") if ``program`` runs a sandbox here, else (None, why not)."""
    found = shutil.which(program)
    if found is None:
        return None, f"bubblewrap ({program!r}) is not installed or not on PATH"
    try:
        argv = [*outside(found), *BASE_OPTIONS, "--", *inside(), "true"]
        result = proc.run(argv, check=False, timeout=30)
    except ProcessError as exc:
        return None, f"bubblewrap ({found}) cannot start: {exc.message}"
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        return None, f"bubblewrap ({found}) cannot make a sandbox here: {said}"
    return found, ""


_probe_once = functools.cache(probe)


def sandbox_for(mode: str, program: str) -> Sandbox:
    """The daemon's sandbox for ``mode`` (one of :data:`MODES`); bwrap is probed once."""
    if mode == "off":
        return Sandbox("off")
    found, problem = _probe_once(program)
    return Sandbox(mode, found, problem)
