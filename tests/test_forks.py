"""The log writers' fork server (dispatcher/process/zygote.py, forks.py): writers forked from
one long-lived process, real processes throughout. The writer's own behaviour (rotation, cap,
signals) runs forked in tests/test_logpipe.py, spawning in tests/test_proc.py."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.process import forks, proc, zygote
from tests.waiting import wait_until

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
WAIT = 30.0


@pytest.fixture
def server() -> Iterator[forks.ForkServer]:
    fs = forks.ForkServer(restart_after=0)
    yield fs
    fs.close()


def spawn(
    tmp_path: Path, fork_server: forks.ForkServer | None, argv: list[str], name: str = "a"
) -> proc.Spawned:
    return proc.spawn(
        argv, cwd=tmp_path, env=ENV, stdin_path=None, log_path=tmp_path / f"{name}.log",
        exit_file=tmp_path / f"{name}.exit", claim_file=tmp_path / f"spawn-{name}",
        log_cap=proc.LogCap(1 << 20, 1, 4096), fork_server=fork_server,
    )  # fmt: skip


def parent_of(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid:
            found.append((int(entry.name), state))
    return found


def ended(child: proc.Spawned) -> bool:
    return not proc.is_alive(child.pid, child.start_time)


def test_a_request_survives_the_wire() -> None:
    odd = os.fsdecode(b"caf\xe9-not-utf8")  # a byte that is no UTF-8 (surrogateescape)
    request = zygote.Request(
        argv=["sh", "-c", "echo 'a b'\n", "", "x=y", odd], env={"A": "1=2", "EMPTY": "", odd: odd},
        cwd="/w d", exit_file="/e", log_path="/l", max_bytes=5, keep=0, head_bytes=7,
        claim="", cgroup="/sys/fs/cgroup/x",
    )  # fmt: skip
    back = zygote.Request.decode(request.encode())
    assert {k: getattr(back, k) for k in zygote.Request.__slots__} == {
        k: getattr(request, k) for k in zygote.Request.__slots__
    }


def test_a_forked_writer_logs_records_and_claims(server: forks.ForkServer, tmp_path: Path) -> None:
    release = tmp_path / "release"
    agent = f"echo out; echo err >&2; while [ ! -e {release} ]; do sleep 0.02; done; exit 3"
    child = spawn(tmp_path, server, ["sh", "-c", agent])
    assert child.popen is None  # not our child: the fork server's
    assert parent_of(child.pid) == server.pid
    assert os.getsid(child.pid) == child.pid  # leads its own session, so kill_tree finds all
    assert child.start_time == proc.process_start_time(child.pid)
    claim = tmp_path / "spawn-a"
    wait_until(claim.exists, "the claim", WAIT)
    # Its command line is the server's: the claim holds what recovery recognises it by.
    assert claim.read_text() == f"{child.pid} {child.start_time}\n"
    assert proc.claim_holder(claim) == child.pid
    assert proc.runs_spawn(child.pid, claim) == child.start_time
    assert proc.runs_spawn(child.pid, tmp_path / "spawn-other") is None
    assert proc.runs_spawn(server.pid or 0, claim) is None  # the claim names another pid
    assert proc.take_claim(claim) is False
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 3
    assert (tmp_path / "a.log").read_text() == "out\nerr\n"
    assert proc.runs_spawn(child.pid, claim) is None  # ended


def test_the_server_killed_the_next_spawn_takes_the_wrapper_then_a_new_server(
    server: forks.ForkServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.restart_after = 3600  # no new server at once
    first = spawn(tmp_path, server, ["true"], "first")
    assert first.popen is None
    old = server.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not proc.is_alive(old, proc.process_start_time(old) or 0), "the kill")
    with caplog.at_level(logging.DEBUG, logger="dispatcher.process"):
        fallback = spawn(tmp_path, server, ["sh", "-c", "echo by the wrapper"], "fallback")
    assert fallback.popen is not None  # the wrapper's, as before the fork server
    assert proc.wait(fallback, timeout=WAIT) == 0
    assert (tmp_path / "fallback.log").read_text() == "by the wrapper\n"
    assert "the wrapper spawns" in caplog.text
    server.restart_after = 0
    again = spawn(tmp_path, server, ["sh", "-c", "echo forked again"], "again")
    assert again.popen is None  # restart_after=0: a new server
    assert server.pid not in (None, old)
    assert proc.wait(again, timeout=WAIT) == 0
    assert (tmp_path / "again.log").read_text() == "forked again\n"
    assert proc.wait(first, timeout=WAIT) == 0


def test_no_server_can_start_every_spawn_takes_the_wrapper(tmp_path: Path) -> None:
    broken = forks.ForkServer(python=str(tmp_path / "no-python"))
    try:
        child = spawn(tmp_path, broken, ["sh", "-c", "echo fine"])
        assert child.popen is not None
        assert proc.wait(child, timeout=WAIT) == 0
        assert (tmp_path / "a.log").read_text() == "fine\n"
    finally:
        broken.close()


def test_a_missing_working_directory_is_an_oserror_as_from_popen(
    server: forks.ForkServer, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        proc.spawn(
            ["/bin/true"], cwd=tmp_path / "no-such-dir", env=ENV, stdin_path=None,
            log_path=tmp_path / "a.log", exit_file=tmp_path / "a.exit",
            log_cap=proc.LogCap(1 << 20, 1, 4096), fork_server=server,
        )  # fmt: skip
    assert spawn(tmp_path, server, ["true"]).popen is None  # the server serves on


def test_many_spawns_from_many_threads_leave_no_zombie(
    server: forks.ForkServer, tmp_path: Path
) -> None:
    children: list[proc.Spawned] = []
    lock = threading.Lock()

    def spawn_some(t: int) -> None:
        for i in range(5):
            child = spawn(tmp_path, server, ["sh", "-c", f"echo {t}-{i}"], f"t{t}-{i}")
            with lock:
                children.append(child)

    threads = [threading.Thread(target=spawn_some, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(children) == 30
    assert all(c.popen is None for c in children)
    assert len({c.pid for c in children}) == 30
    for c in children:
        assert proc.wait(c, timeout=WAIT) == 0
    for t in range(6):
        for i in range(5):
            assert (tmp_path / f"t{t}-{i}.log").read_text() == f"{t}-{i}\n"
    assert server.pid is not None
    # The kernel reaps the server's children: none is left, not even as a zombie.
    wait_until(lambda: children_of(server.pid or 0) == [], "the writers to be reaped", WAIT)


OWNER = """
import sys, time
from pathlib import Path
from dispatcher.process import forks, proc
tmp = Path(sys.argv[1])
server = forks.ForkServer()
child = proc.spawn(
    ["sh", "-c", f"echo started; while [ ! -e {tmp}/release ]; do sleep 0.02; done; echo done; exit 4"],
    cwd=tmp, env={"PATH": "/usr/bin:/bin"}, stdin_path=None, log_path=tmp / "agent.log",
    exit_file=tmp / "exit", claim_file=tmp / "spawn-x", log_cap=proc.LogCap(1 << 20, 1, 4096),
    fork_server=server,
)
assert child.popen is None
print(child.pid, child.start_time, server.pid, flush=True)
time.sleep(300)
"""


def test_the_writer_outlives_its_daemon_and_the_server(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL: the server it started ends with it (its socket closes),
    the writer and its agent run on, and the log and the exit status are all there."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pid, start, server_pid = map(int, owner.stdout.readline().split())
        server_start = proc.process_start_time(server_pid)
        assert server_start is not None
        wait_until(lambda: "started" in (tmp_path / "agent.log").read_text(), "the agent", WAIT)
        owner.kill()
        assert owner.wait(WAIT) == -signal.SIGKILL
    finally:
        owner.kill()
        owner.wait(WAIT)
        if owner.stdout is not None:
            owner.stdout.close()
    wait_until(lambda: not proc.is_alive(server_pid, server_start), "the server to end", WAIT)
    assert proc.is_alive(pid, start)  # the writer runs on
    assert proc.runs_spawn(pid, tmp_path / "spawn-x") == start  # as a new daemon sees it
    (tmp_path / "release").touch()
    adopted = proc.Spawned(pid, start, tmp_path / "exit", None)
    assert proc.wait(adopted, timeout=WAIT) == 4
    assert (tmp_path / "agent.log").read_text() == "started\ndone\n"


def test_close_ends_the_server_not_its_writers(server: forks.ForkServer, tmp_path: Path) -> None:
    release = tmp_path / "release"
    child = spawn(tmp_path, server, ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
    server_pid = server.pid
    assert server_pid is not None
    server.close()
    assert server.pid is None
    assert not Path(f"/proc/{server_pid}").exists()  # ended and reaped
    assert proc.is_alive(child.pid, child.start_time)
    release.touch()
    assert proc.wait(child, timeout=WAIT) == 0


def test_a_writer_shows_none_of_the_daemons_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked writer's /proc/<pid>/environ is the server's: only the locale and PATH of
    the daemon's, never its secrets (the wrapper's was the agent's own environment)."""
    monkeypatch.setenv("DISPATCHER_TOKEN", "daemon-secret")
    fs = forks.ForkServer()
    try:
        release = tmp_path / "release"
        child = spawn(tmp_path, fs, ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.02; done"])
        assert child.popen is None
        environ = Path(f"/proc/{child.pid}/environ").read_bytes()
        assert b"daemon-secret" not in environ
        assert Path(f"/proc/{child.pid}/cwd").readlink() == tmp_path  # the agent's
        assert Path(f"/proc/{fs.pid}/cwd").readlink() == Path("/")  # the server pins none
        release.touch()
        assert proc.wait(child, timeout=WAIT) == 0
    finally:
        fs.close()


def test_the_writers_cpu_is_counted_in_the_servers_children(
    server: forks.ForkServer, tmp_path: Path
) -> None:
    """The server waits for its writers (not ignoring SIGCHLD), so what they and their
    agents spent shows in its children's CPU time, as the wrapper's did in the daemon's."""

    def children_ticks(pid: int) -> int:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return int(fields[13]) + int(fields[14])  # cutime + cstime

    spawn(tmp_path, server, ["true"], "warm")  # the server runs
    assert server.pid is not None
    before = children_ticks(server.pid)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    child = spawn(tmp_path, server, [sys.executable, "-c", burn], "burn")
    assert proc.wait(child, timeout=WAIT) == 0
    tick = os.sysconf("SC_CLK_TCK")
    wait_until(
        lambda: children_ticks(server.pid or 0) - before >= 0.4 * tick, "the CPU counted", WAIT
    )


def test_a_stopped_server_holds_no_spawn_forever(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server that takes no request (stopped here) fills its socket's buffer: each send
    gives up after the timeout, and every spawn waiting behind it goes on to the wrapper."""
    monkeypatch.setattr(forks, "REPORT_TIMEOUT_S", 1.0)
    fs = forks.ForkServer(restart_after=60)
    try:
        fs.start()
        pid = fs.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        big = {**ENV, "BIG": "x" * 400_000}  # more than the socket's buffer
        request = zygote.Request(
            argv=["true"], env=big, cwd=str(tmp_path), exit_file=str(tmp_path / "e"),
            log_path=str(tmp_path / "l"), max_bytes=1 << 20, keep=1, head_bytes=64, claim="",
            cgroup="",
        )  # fmt: skip
        answers: list[object] = []

        def one() -> None:
            with open(tmp_path / "l", "ab") as log, open(os.devnull, "rb") as inp:
                answers.append(fs.spawn(request, inp.fileno(), log.fileno()))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads), "a spawn hung on the stopped server"
        assert answers == [None, None]
        assert fs.pid is None  # given up on, and killed
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), "the stopped server gone", 10)
    finally:
        fs.close()


def test_after_close_no_server_starts_again(server: forks.ForkServer, tmp_path: Path) -> None:
    server.start()
    server.close()
    child = spawn(tmp_path, server, ["true"])  # the wrapper, not a new server
    assert server.pid is None and child.popen is not None
    assert proc.wait(child, WAIT) == 0


def test_a_nul_or_a_bad_name_fails_as_through_popen_not_mangled(
    server: forks.ForkServer, tmp_path: Path
) -> None:
    bad = zygote.Request(
        argv=["a", "b\0c"], env={}, cwd="/", exit_file="/e", log_path="/l", max_bytes=1,
        keep=0, head_bytes=1, claim="", cgroup="",
    )  # fmt: skip
    assert not bad.encodable()
    bad.argv, bad.env = ["a"], {"K=V": "x"}
    assert not bad.encodable()
    bad.env = {"K": "V=x"}
    assert bad.encodable()
    with pytest.raises(ValueError, match="null byte"):
        proc.spawn(
            ["true", "conv\0--evil=1"], cwd=tmp_path, env=ENV, stdin_path=None,
            log_path=tmp_path / "n.log", exit_file=tmp_path / "n.exit",
            log_cap=proc.LogCap(1 << 20, 1, 4096), fork_server=server,
        )  # fmt: skip
