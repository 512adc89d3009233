"""Start the real daemon (``dispatcher serve``) on 127.0.0.1 as a subprocess.

``daemon`` is one daemon per xdist worker (tests register their own repos on
it); ``daemon_factory`` starts private ones for tests that restart or kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import pytest

from tests.daemonproc import TERMINAL, clean_env, dispatcher_argv, free_port
from tests.gitutil import init_repo
from tests.waiting import wait_until

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
}


def base_env(home: Path) -> dict[str, str]:
    return clean_env(home, IDENTITY)


@dataclass
class Daemon:
    state_dir: Path
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    serve_args: tuple[str, ...] = ()  # more options of `dispatcher serve` (--log-format json)
    argv: tuple[str, ...] = ()  # instead of `dispatcher serve`: a start script that runs it
    _api: httpx.Client | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    @property
    def cli_env(self) -> dict[str, str]:
        return {**self.env, "DISPATCHER_URL": self.url, "DISPATCHER_STATE_DIR": str(self.state_dir)}

    def start(self, timeout: float = 30) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115
        serve = [*dispatcher_argv(), "serve", "--port", str(self.port),
                 "--state-dir", str(self.state_dir), *self.serve_args]  # fmt: skip
        self.proc = subprocess.Popen(
            list(self.argv) or serve,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            wait_until(
                self._answers,
                lambda: f"the daemon to answer:\n{self.log_path.read_text()}",
                timeout,
                interval=0.05,
            )
        except BaseException:
            # A daemon that did not answer in time is ended here: no fixture teardown
            # runs for a start that raised, so it would outlive the test run.
            self.stop(signal.SIGKILL)
            raise
        self._api = None
        return self

    def _answers(self) -> bool:
        """True once ``/health`` answers 200; raises if the daemon has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()}"
            )
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._api is not None:
            self._api.close()
            self._api = None
        return self.proc.returncode

    @property
    def api(self) -> httpx.Client:
        if self._api is None:
            self._api = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
            )
        return self._api

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*dispatcher_argv(), *args],
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dispatcher {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def add_repo(self, path: Path, name: str | None = None) -> str:
        name = name or f"r-{uuid.uuid4().hex[:8]}"
        resp = self.api.post("/repos", json={"path": str(path), "name": name})
        assert resp.status_code == 201, resp.text
        return name

    def submit(self, repo: str, prompt: str = "do it", **body: Any) -> dict[str, Any]:
        resp = self.api.post("/jobs", json={"repo": repo, "prompt": prompt, **body})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def job(self, job_id: int) -> dict[str, Any]:
        resp = self.api.get(f"/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def agent_group(self, job_id: int) -> int:
        """The running agent's process group id, checked to be its own before anyone
        signals it: a wrong group id could end processes that are not the test's."""
        pid = self.job(job_id)["pid"]
        assert isinstance(pid, int) and pid > 1, pid
        assert os.getpgid(pid) == pid, "the agent does not lead its own process group"
        return pid

    def forked_writer(self, job_id: int) -> tuple[int, int]:
        """The job's log writer, checked to be forked from the daemon's fork server (not
        started by the wrapper): (its pid, the server's pid). Its claim names its pid and
        start time, and its parent is the server, the daemon's child."""
        pid = self.agent_group(job_id)
        claims = list((self.state_dir / "jobs" / str(job_id)).glob("spawn-*"))
        assert len(claims) == 1, claims
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        assert claims[0].read_text() == f"{pid} {fields[19]}\n", "not a forked writer's claim"
        server = int(fields[1])
        assert self.proc is not None
        assert server != self.proc.pid
        assert b"zygote.py" in Path(f"/proc/{server}/cmdline").read_bytes()
        return pid, server

    def wait(
        self, job_id: int, states: set[str] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll until the job reaches one of ``states`` (default: terminal)."""
        want = states or TERMINAL
        return wait_until(
            lambda: (job := self.job(job_id))["state"] in want and job,
            lambda: f"job {job_id} to reach {sorted(want)}: stuck in {self.job(job_id)['state']}",
            timeout,
            max_interval=0.25,
        )

    def cancel_active(self) -> None:
        for state in ("queued", "preparing", "running"):
            for job in self.api.get("/jobs", params={"state": state, "limit": 500}).json()["items"]:
                self.api.post(f"/jobs/{job['id']}/cancel")


class LogFollower:
    """``dispatcher logs -f JOB`` in the background, its output read as it comes.

    A test waits for a line to know the stream is open and live before it acts
    (a follower started just before an action may connect only after it).
    """

    def __init__(self, daemon: Daemon, job_id: int) -> None:
        self.proc = subprocess.Popen(
            [*dispatcher_argv(), "logs", "-f", str(job_id)],
            env=daemon.cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._out: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, sink), daemon=True)
            for pipe, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: IO[str], sink: list[str]) -> None:
        for line in pipe:
            with self._cond:
                sink.append(line)
                self._cond.notify_all()

    @property
    def out(self) -> str:
        with self._cond:
            return "".join(self._out)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until the follower has printed ``text``; fails (with what it printed) after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: text in "".join(self._out), timeout):
                raise AssertionError(
                    f"the follower did not print {text!r} in {timeout}s; it printed "
                    f"{''.join(self._out)!r}, stderr {''.join(self._err)!r}"
                )

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for the follower to end by itself: (exit code, stdout, stderr)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the follower did not end in {timeout}s: {self.out!r}") from None
        for reader in self._readers:
            reader.join(timeout)
        with self._cond:
            return code, "".join(self._out), "".join(self._err)

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _new_daemon(root: Path, **env: str) -> Daemon:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    # The warm pool is off unless a test turns it on (tests/e2e/test_pool.py): the other
    # suites count worktrees exactly.
    full_env = {
        **base_env(home), "DISPATCHER_KILL_GRACE_SECONDS": "1", "DISPATCHER_POOL_SIZE": "0",
        **env,
    }  # fmt: skip
    return Daemon(state_dir=state, port=free_port(), env=full_env, log_path=root / "daemon.log")


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = _new_daemon(
        tmp_path_factory.mktemp("daemon"),
        DISPATCHER_MAX_PARALLEL="16",
        DISPATCHER_MAX_PARALLEL_PER_REPO="4",
    ).start()
    yield d
    try:
        d.cancel_active()
    finally:
        d.stop()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(**env: str) -> Daemon:
        d = _new_daemon(tmp_path / f"d{len(started)}", **env)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.cancel_active()
            finally:
                d.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh git repo with one commit on main."""
    return init_repo(
        tmp_path / "app", files={"README.md": "hello\n", "src/app.py": "print('hi')\n"}
    )


@pytest.fixture
def agent(tmp_path: Path) -> Callable[[str, str], str]:
    """Write an executable agent script; returns its absolute path."""
    bindir = tmp_path / "agents"
    bindir.mkdir(exist_ok=True)

    def make(name: str, body: str) -> str:
        path = bindir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return str(path)

    return make


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, ended but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def alive_in_session(session: int, pid: int) -> bool:
    """True while a process of session ``session`` (a job's recorded pid: the agent's
    wrapper leads its session) that calls itself ``pid`` runs. A sandboxed agent has its
    own pid namespace, so the ``$$`` it writes down is its pid in there: the last field
    of NSpid in /proc/<pid>/status (the only one for an agent run without a sandbox)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z" or int(fields[3]) != session:
            continue
        nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
        if nspid and int(nspid[0][-1]) == pid:
            return True
    return False


def hold_fault(fault_dir: Path, name: str) -> Path:
    """Arm fault point ``name`` (dispatcher/faults.py) for a daemon started with
    DISPATCHER_FAULT_DIR=fault_dir; returns the ``.reached`` file to wait for.
    :func:`release_fault` lets the daemon go on."""
    fault_dir.mkdir(parents=True, exist_ok=True)
    (fault_dir / f"{name}.hold").touch()
    return fault_dir / f"{name}.reached"


def release_fault(fault_dir: Path, name: str) -> None:
    """Let a daemon held at fault point ``name`` go on (and the next one pass it)."""
    (fault_dir / f"{name}.hold").unlink()
