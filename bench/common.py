"""What every section shares: the run context, subprocess and timing helpers, targets.

A :class:`Ctx` owns one temp dir for the whole run (repos, daemons' state,
scratch worktrees) and an :class:`contextlib.ExitStack` that stops every
daemon and removes the temp dir at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.daemonproc import clean_env

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def sh(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a short command; on failure show command, code and output."""
    proc = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} (in {cwd}) exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` took (perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    idx = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return ordered[idx]


def summary(seconds: list[float], *, hi: float = 0.95) -> dict[str, Any]:
    """p50 and a high percentile (p95 by default) in ms."""
    if not seconds:
        return {"n": 0}
    key = f"p{round(hi * 100)}_ms"
    return {
        "p50_ms": round(statistics.median(seconds) * 1000, 1),
        key: round(pct(seconds, hi) * 1000, 1),
        "min_ms": round(min(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "n": len(seconds),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def target(ok: bool | None, text: str) -> dict[str, Any]:
    """A target's verdict: True (met), False (not met) or None (not measured)."""
    return {"target": text, "met": ok}


def verdict(t: dict[str, Any]) -> str:
    met = t.get("met")
    return "n/a" if met is None else ("met" if met else "NOT met")


@dataclass
class Ctx:
    """One run: its temp dir, environment, options and everything to clean up."""

    quick: bool
    root: Path
    env: dict[str, str]
    stack: contextlib.ExitStack
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, stack: contextlib.ExitStack, *, quick: bool, keep: bool = False) -> Ctx:
        root = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
        if not keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        home = root / "home"
        home.mkdir()
        env = clean_env(home, IDENTITY)
        return cls(quick=quick, root=root, env=env, stack=stack)

    def dir(self, name: str) -> Path:
        """A fresh directory under the run's temp dir."""
        path = self.root / name
        path.mkdir(parents=True)
        return path

    def git(self, cwd: Path, *args: str, check: bool = True) -> str:
        return sh(cwd, "git", *args, env=self.env, check=check).stdout.strip()


def git_version() -> str:
    return sh(Path.cwd(), "git", "--version").stdout.strip()


def python_exe() -> str:
    return sys.executable


def cpu_idle(interval: float = 0.5) -> float:
    """Fraction of the machine's CPU time idle over ``interval`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(interval)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet_machine(max_wait: float, idle: float = 0.85) -> dict[str, float]:
    """Wait (at most ``max_wait`` s) until the CPUs are ``idle`` for two samples in a row:
    other work on the machine (a test suite) skews every figure. Returns what was seen."""
    t0 = time.monotonic()
    seen = cpu_idle()
    while time.monotonic() - t0 < max_wait:
        now = cpu_idle()
        if seen >= idle and now >= idle:
            seen = now
            break
        seen = now
    return {"cpu_idle": round(seen, 2), "waited_s": round(time.monotonic() - t0, 1)}
