"""The real daemon (``dispatcher serve``) as a subprocess on a free loopback port.

Each :class:`Daemon` has its own home, state dir and log under the run's temp
dir. :meth:`Daemon.start` registers its stop (SIGTERM, then SIGKILL after a
grace period) on the run's exit stack, so no daemon outlives the benchmark.

:meth:`Daemon.settle` waits until the daemon has no ``git`` process running
(its warm pool filling or recycling trees in the background, a ref scan):
measurements start from a quiet machine whatever the pool's implementation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Ctx
from tests.daemonproc import TERMINAL, dispatcher_argv, free_port
from tests.waiting import wait_until

TICK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[tuple[int, str]]]:
    """ppid -> [(pid, comm)] for every process (from /proc/*/stat)."""
    out: dict[int, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        lpar, rpar = raw.find("("), raw.rfind(")")
        fields = raw[rpar + 2 :].split()
        if len(fields) < 2:
            continue
        out.setdefault(int(fields[1]), []).append((int(entry.name), raw[lpar + 1 : rpar]))
    return out


def _ticks(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After ")": state is fields[0]; utime, stime, cutime, cstime are stat fields 14-17.
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, children's) of ``pid``, in clock ticks. The children's: the
    reaped ones' cutime+cstime, plus all of the log writers' fork server's (a live child
    whose own children, the writers and through them the agents, are reaped by it)."""
    own, kids = _ticks(pid)
    for child, _comm in _children_map().get(pid, []):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"zygote.py" in cmdline:
            with contextlib.suppress(OSError):
                kids += sum(_ticks(child))
    return own, kids


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every process below ``pid``."""
    children = _children_map()
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


class Daemon:
    def __init__(
        self, ctx: Ctx, name: str, *, state_dir: Path | None = None, **settings: str
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.root = ctx.root / "daemons" / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir or self.root / "state"
        self.log_path = self.root / "daemon.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **ctx.env,
            "BENCH_MARKS": str(self.root / "marks"),
            "DISPATCHER_LOG_LEVEL": "WARNING",
            **{f"DISPATCHER_{k.upper()}": v for k, v in settings.items()},
        }
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> Daemon:
        self.marks.mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*dispatcher_argv(), "serve", "--port", str(self.port),
                 "--state-dir", str(self.state_dir)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.ctx.stack.callback(self.stop)
        wait_until(
            self._answers,
            lambda: f"daemon {self.name} to answer:\n{self.log_tail()}",
            timeout,
            interval=0.05,
        )
        return self

    def _answers(self) -> bool:
        """True once ``/health`` answers 200; raises if the daemon has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon {self.name} exited:\n{self.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        return False

    def stop(self, timeout: float = 30) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def marks(self) -> Path:
        """Where bench agents write their start time (``BENCH_MARKS``)."""
        return self.root / "marks"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            token = (self.state_dir / "token").read_text().strip()
            self._http = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
        return self._http

    # ------------------------------------------------------------ API helpers

    def add_repo(self, path: Path, name: str) -> str:
        resp = self.http.post("/repos", json={"path": str(path), "name": name})
        if resp.status_code != 201:
            raise RuntimeError(f"POST /repos {name}: {resp.status_code} {resp.text}")
        return name

    def submit(self, repo: str, prompt: str, command: list[str]) -> dict[str, Any]:
        resp = self.http.post("/jobs", json={"repo": repo, "prompt": prompt, "command": command})
        if resp.status_code != 201:
            raise RuntimeError(f"POST /jobs: {resp.status_code} {resp.text}")
        return dict(resp.json())

    def wait(self, job_id: int, timeout: float = 300) -> dict[str, Any]:
        """Poll until the job is terminal (or ``timeout`` passes: an error)."""

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
            return job if job["state"] in TERMINAL else None

        return wait_until(
            finished,
            lambda: (
                f"job {job_id} to end: stuck in {self.http.get(f'/jobs/{job_id}').json()['state']}"
            ),
            timeout,
            interval=0.005,
            max_interval=0.1,
        )

    def wait_all_done(self, timeout: float) -> None:
        """Poll /health until no job is active."""
        wait_until(
            lambda: not self.http.get("/health").json()["jobs_active"],
            "no job to be active",
            timeout,
            interval=0.1,
        )

    def log_of(self, job_id: int) -> str:
        return self.http.get(f"/jobs/{job_id}/log").text

    # ------------------------------------------------------------ process

    def git_busy(self) -> list[int]:
        return [pid for pid, comm in descendants(self.pid) if comm.startswith("git")]

    def settle(self, *, timeout: float, min_pause: float = 0.3, quiet_polls: int = 4) -> float:
        """Wait until the daemon is idle for ``quiet_polls`` polls 50 ms apart: no git
        process of its own running and its own CPU use under 20% of a core (at least
        ``min_pause`` s, at most ``timeout`` s). Returns the seconds waited."""
        t0 = time.monotonic()
        quiet = 0
        ticks = [cpu_ticks(self.pid)[0]]
        while time.monotonic() - t0 < timeout:
            time.sleep(0.05)
            ticks.append(cpu_ticks(self.pid)[0])
            window = ticks[-quiet_polls - 1 :]
            busy_cpu = window[-1] - window[0] > 0.2 * quiet_polls * 0.05 * TICK
            quiet = 0 if self.git_busy() else quiet + 1
            if (
                quiet >= quiet_polls
                and not busy_cpu
                and len(ticks) > quiet_polls
                and time.monotonic() - t0 >= min_pause
            ):
                break
        return time.monotonic() - t0

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM of the daemon process, in kB."""
        out: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        return out
