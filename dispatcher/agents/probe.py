"""Is an agent installed where the daemon would run it, and which version is it?

:func:`probe` looks the profile's program up on the given PATH, as the runner's spawn
does, and runs its version command (``--version`` unless the profile names another)
with a short timeout, in a scratch directory, with the given environment. The
answer for one program file is kept until that file changes (its size or mtime):
the CLIs are slow to start (a Node.js bundle takes a second), and a listing asks for
all of them.

I/O: one subprocess per program not seen before (through :mod:`dispatcher.process.proc`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dispatcher.agents.catalog import BUILTIN_PROFILES
from dispatcher.agents.spec import AgentProfile
from dispatcher.errors import ProcessError
from dispatcher.process import proc

VERSION_TIMEOUT_S: Final = 20.0
"""How long a version command may take (a first start of some CLIs unpacks itself)."""

_VERSION_MAX: Final = 120

_BUILTIN_PROGRAMS: Final = frozenset(p.program for p in BUILTIN_PROFILES.values())

_ENV_KEPT: Final = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
"""All a version command gets of the daemon's environment: no key or token."""


@dataclass(frozen=True)
class Probe:
    """Where the agent's program is (None: not found) and what it says its version is."""

    path: str | None
    version: str | None = None
    problem: str | None = None
    """Why the agent cannot be run or asked (not on PATH, its version command failed)."""


class Prober:
    """Probes with a cache per program file; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int, int], Probe] = {}

    def probe(self, profile: AgentProfile, env: Mapping[str, str]) -> Probe:
        """Where ``profile``'s program is on ``env``'s PATH and, for a built-in agent's
        program, its version."""
        program = profile.program
        if os.sep in program:  # a path: relative ones are from a job's worktree
            if not os.path.isabs(program):
                return Probe(None, problem=f"{program} is relative to each job's worktree")
            found: str | None = program if os.access(program, os.X_OK) else None
        else:
            found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            return Probe(None, problem=f"{program!r} not found on the daemon's PATH")
        if program not in _BUILTIN_PROGRAMS:
            return Probe(found)  # never run: see the module docstring
        try:
            st = os.stat(found)
        except OSError as exc:
            return Probe(found, problem=f"cannot read {found}: {exc.strerror}")
        key = (os.path.realpath(found), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._versions.get(key)
        if cached is not None:
            return cached
        answer = _ask_version(found, program, {k: env[k] for k in _ENV_KEPT if k in env})
        if answer.version is not None:
            with self._lock:
                self._versions[key] = answer
        return answer


def _ask_version(found: str, program: str, env: Mapping[str, str]) -> Probe:
    with tempfile.TemporaryDirectory(prefix="dispatcher-probe-") as scratch:
        try:
            result = proc.run(
                [found, "--version"], cwd=scratch, env=env, check=False, timeout=VERSION_TIMEOUT_S
            )
        except ProcessError as exc:
            return Probe(found, problem=exc.message)
    text = result.stdout.strip() or result.stderr.strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if result.returncode != 0:
        why = f": {first[:_VERSION_MAX]}" if first else ""
        return Probe(found, problem=f"{program} --version exited {result.returncode}{why}")
    return Probe(found, version=first[:_VERSION_MAX] or None)
