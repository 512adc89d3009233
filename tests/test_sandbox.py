"""dispatcher.process.sandbox on real files with real bubblewrap: what a boxed process sees when
paths nest, how the probe reports why bubblewrap cannot be used, and the modes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from dispatcher.errors import ProcessError
from dispatcher.process import proc, sandbox
from tests.waiting import wait_until

needs_bwrap = pytest.mark.skipif(
    sandbox.probe("bwrap")[0] is None, reason="bubblewrap cannot run here (.ci/run installs it)"
)


def make(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_in(view: sandbox.View, script: str) -> str:
    """``sh -c script`` in the box; its stdout and stderr."""
    box = sandbox.sandbox_for("bwrap", "bwrap")
    argv = box.wrap(["sh", "-c", script], view, env=os.environ)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


@needs_bwrap
def test_a_repo_holding_the_state_dir_and_a_worktree_inside_the_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    state = repo / ".state"  # the state dir inside a registered checkout
    make(repo / "secret.txt", "repo secret\n")
    make(repo / ".git" / "config", "[core]\n")
    (repo / ".git" / "hooks").mkdir()
    make(state / "token", "the token\n")
    worktree = state / "worktrees" / "r" / "1"
    make(worktree / "work.txt", "work\n")
    other = state / "worktrees" / "r" / "2"
    make(other / "theirs.txt", "other job\n")
    prompt = make(state / "jobs" / "1" / "prompt.md", "the prompt\n")
    summary = state / "jobs" / "1" / "summary.md"
    view = sandbox.job_view(
        state_dir=state, checkouts=[repo], worktree=worktree, git_dir=repo / ".git",
        read_only=[prompt], env={},
    ).with_files(summary)  # fmt: skip
    out = run_in(
        view,
        f"cat {state}/token {repo}/secret.txt {other}/theirs.txt; cat work.txt {prompt};"
        f"echo new > made.txt; echo obj > {repo}/.git/object; echo done > {summary};"
        f"echo no >> {repo}/.git/config; echo no > {prompt}; touch {repo}/.git/hooks/h",
    )
    assert "the token" not in out and "repo secret" not in out and "other job" not in out
    assert "work\nthe prompt\n" in out
    assert (worktree / "made.txt").read_text() == "new\n"
    assert (repo / ".git" / "object").read_text() == "obj\n"  # the agent commits there
    assert summary.read_text() == "done\n"
    assert (repo / ".git" / "config").read_text() == "[core]\n"
    assert prompt.read_text() == "the prompt\n"
    assert not (repo / ".git" / "hooks" / "h").exists()
    assert out.count("Read-only file system") == 3


@needs_bwrap
def test_the_box_has_its_own_processes_and_no_capabilities(tmp_path: Path) -> None:
    view = sandbox.View(workdir=tmp_path)
    out = run_in(
        view, f"ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status; ls /proc/{os.getpid()}"
    )
    count, caps = out.splitlines()[:2]
    assert int(count) <= 4  # bwrap's init, sh, ls, grep: never this test's processes
    assert caps.split()[1] == "0000000000000000"
    assert "No such file" in out


def test_mount_order_is_shallow_first_and_leaves_missing_paths_out(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    make(inner / "f")
    view = sandbox.View(
        workdir=tmp_path, hide=(inner, outer, tmp_path / "gone"), writable=(inner,),
        read_only=(inner / "f", tmp_path / "missing"),
    )  # fmt: skip
    assert sandbox.mount_options(view) == [
        "--tmpfs", str(outer),
        "--tmpfs", str(inner), "--bind", str(inner), str(inner),
        "--ro-bind", str(inner / "f"), str(inner / "f"),
    ]  # fmt: skip


def test_mount_options_resolve_links_like_realpath(tmp_path: Path) -> None:
    real_dir = tmp_path / "real" / "dir"
    make(real_dir / "f")
    (tmp_path / "link").symlink_to(real_dir)  # a link to a directory
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # realpath leaves a loop as it is
    view = sandbox.View(
        workdir=tmp_path, hide=(tmp_path / "link",),
        read_only=(tmp_path / "link" / "f", tmp_path / "link" / "missing", tmp_path / "loop"),
    )  # fmt: skip
    assert sandbox.mount_options(view) == [
        "--tmpfs", str(real_dir), "--ro-bind", str(real_dir / "f"), str(real_dir / "f"),
    ]  # fmt: skip
    r = sandbox.Resolver()
    for p in (*view.hide, *view.read_only, tmp_path / "x" / ".." / "link"):
        assert r.real(p) == Path(os.path.realpath(p)), p


def test_a_views_paths_are_looked_up_once_per_component(tmp_path: Path) -> None:
    git_dir = tmp_path / "repo" / ".git"
    for name in sandbox.GIT_DIR_PROTECTED:
        make(git_dir / name)
    view = sandbox.View(
        workdir=tmp_path, writable=(git_dir,),
        read_only=tuple(git_dir / name for name in sandbox.GIT_DIR_PROTECTED),
    )  # fmt: skip
    r = sandbox.Resolver()
    options = sandbox.mount_options(view, r)
    assert options[:3] == ["--bind", str(git_dir), str(git_dir)]
    assert len(options) == 3 + 3 * len(sandbox.GIT_DIR_PROTECTED)
    depth = len(git_dir.parts) - 1  # every component below /
    assert r.lookups == depth + len(sandbox.GIT_DIR_PROTECTED)


def test_probe_says_why_bubblewrap_cannot_be_used(tmp_path: Path) -> None:
    missing = str(tmp_path / "bwrap")
    assert sandbox.probe(missing) == (
        None,
        f"bubblewrap ({missing!r}) is not installed or not on PATH",
    )
    failing = make(
        tmp_path / "bin" / "bwrap",
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
    )
    failing.chmod(0o755)
    found, why = sandbox.probe(str(failing))
    assert found is None
    assert (
        why
        == f"bubblewrap ({failing}) cannot make a sandbox here: bwrap: setting up uid map: Permission denied"
    )


def test_modes_off_and_fallback_leave_argv_alone_and_required_refuses(tmp_path: Path) -> None:
    view = sandbox.View(workdir=tmp_path)
    assert sandbox.sandbox_for("off", "bwrap").wrap(["a", "b"], view, env={}) == ["a", "b"]
    missing = str(tmp_path / "nope")
    assert sandbox.sandbox_for("auto", missing).wrap(["a"], view, env={}) == ["a"]
    with pytest.raises(
        sandbox.SandboxUnavailable, match=r"^DISPATCHER_SANDBOX=bwrap but bubblewrap"
    ):
        sandbox.sandbox_for("bwrap", missing).wrap(["a"], view, env={})


@needs_bwrap
def test_a_missing_or_hidden_agent_command_is_refused_before_it_runs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    tool = make(repo / "bin" / "agent", "#!/bin/sh\n")
    tool.chmod(0o755)
    view = sandbox.View(workdir=tmp_path, hide=(repo,))
    box = sandbox.sandbox_for("bwrap", "bwrap")
    with pytest.raises(ProcessError, match="agent command not found on PATH: 'no-such-agent'"):
        box.wrap(["no-such-agent"], view, env={"PATH": str(tmp_path)})
    with pytest.raises(ProcessError, match="which the sandbox hides from agents"):
        box.wrap([str(tool)], view, env={})


@needs_bwrap
def test_a_boxed_agent_gets_its_grace_period_when_stopped(tmp_path: Path) -> None:
    """kill_tree's SIGTERM reaches the agent inside, and nothing SIGKILLs it early (as
    bwrap's --die-with-parent would, once the wrapper shell ends on that SIGTERM)."""
    box = sandbox.sandbox_for("bwrap", "bwrap")
    script = (
        "trap 'sleep 0.5; echo graceful > done; exit 3' TERM; echo up > started; "
        "while :; do sleep 0.05; done"
    )
    argv = box.wrap(["sh", "-c", script], sandbox.View(workdir=tmp_path), env=os.environ)
    child = proc.spawn(
        argv, cwd=tmp_path, env=os.environ, stdin_path=None, log_path=tmp_path / "log",
        exit_file=tmp_path / "exit",
    )  # fmt: skip
    wait_for(tmp_path / "started", tmp_path / "log")
    proc.kill_tree(child.pid, child.start_time, grace=10)
    proc.wait(child, timeout=10)
    assert (tmp_path / "done").read_text() == "graceful\n"


def spawn_boxed(tmp_path: Path, script: str) -> proc.Spawned:
    """``sh -c script`` as the daemon starts an agent: boxed, under the log writer."""
    box = sandbox.sandbox_for("bwrap", "bwrap")
    argv = box.wrap(["sh", "-c", script], sandbox.View(workdir=tmp_path), env=os.environ)
    return proc.spawn(
        argv, cwd=tmp_path, env=os.environ, stdin_path=None, log_path=tmp_path / "log",
        exit_file=tmp_path / "exit", log_cap=proc.LogCap(1 << 20, 1, 4096),
    )  # fmt: skip


def wait_for(path: Path, log: Path) -> None:
    """Until the boxed script writes ``path``; fails showing its ``log``."""
    wait_until(path.exists, lambda: f"{path.name}, the log saying {log.read_text()!r}", 30)


@needs_bwrap
def test_a_boxed_agent_under_the_log_writer_keeps_its_last_words_and_exit_code(
    tmp_path: Path,
) -> None:
    """The group's SIGTERM must not end bwrap's outer process: the log writer would see
    its child end, record 143 and close the pipe under the agent's trap handler."""
    script = (
        "trap 'sleep 1; echo last words; exit 7' TERM; echo up > started; "
        "while :; do sleep 0.05; done"
    )
    child = spawn_boxed(tmp_path, script)
    wait_for(tmp_path / "started", tmp_path / "log")
    proc.kill_tree(child.pid, child.start_time, grace=10)
    assert proc.wait(child, timeout=10) == 7
    assert "last words" in (tmp_path / "log").read_text()


@needs_bwrap
def test_a_boxed_agent_that_ignores_the_stop_is_killed_and_signal_codes_come_through(
    tmp_path: Path,
) -> None:
    stubborn = spawn_boxed(tmp_path, "trap '' TERM INT HUP; echo up > started; sleep 60")
    wait_for(tmp_path / "started", tmp_path / "log")
    started = time.monotonic()
    proc.kill_tree(stubborn.pid, stubborn.start_time, grace=1)
    assert proc.wait(stubborn, timeout=10) is not None
    wait_until(  # SIGKILLed: gone as soon as the kernel reaps it
        lambda: not proc._group_alive(stubborn.pid),
        "the killed group to be reaped, 8 s from the kill",
        timeout=started + 8 - time.monotonic(),
    )
    (tmp_path / "started").unlink()
    suicide = spawn_boxed(tmp_path, "echo up > started; kill -USR1 $$")
    assert proc.wait(suicide, timeout=30) == 128 + 10
    (tmp_path / "started").unlink()
    hup = spawn_boxed(tmp_path, "echo up > started; while :; do sleep 0.05; done")
    wait_for(tmp_path / "started", tmp_path / "log")
    proc.kill_tree(hup.pid, hup.start_time, grace=10)
    assert proc.wait(hup, timeout=10) == 128 + 15
