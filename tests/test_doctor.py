"""``dispatcher doctor`` and ``GET /doctor``: one line per check, and exit 1 on a problem.

Each case runs the real command in a subprocess, against a real daemon started with the
set-up under test (or none), and checks the exact lines and the exit code: a healthy
set-up, then each broken one on its own (old git, unwritable state dir, a missing or
blocked agent, no daemon, a broken trigger file, a forge trigger with no secret, a
notify target that does not answer).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher import __version__
from dispatcher.agents.catalog import BUILTIN_PROFILES
from tests.daemon_fixture import Daemon, base_env
from tests.daemonproc import dispatcher_argv, free_port
from tests.gitutil import commit_file, init_repo
from triggers.config import check

START = (
    "start it: `dispatcher serve` (or `dispatcher service install` to keep it running); "
    "DISPATCHER_URL says where this command looks"
)
STATE_DIR_FIX = (
    "make {0} a directory you can write, or point DISPATCHER_STATE_DIR (serve --state-dir) at one"
)
GIT_FIX = "install git 2.38 or later on the daemon's PATH"
SECRETS_FIX = (
    "set DISPATCHER_GITHUB_WEBHOOK_SECRET (GitHub, Gitea, Forgejo) or "
    "DISPATCHER_GITLAB_WEBHOOK_TOKEN (GitLab), or the repo's entry of "
    "DISPATCHER_WEBHOOK_SECRETS, to the forge's webhook secret and restart the daemon"
)
NOT_FOUND_FIX = (
    "install it in a directory on the daemon's PATH (docs/agents.md), or make what uses it "
    "name another agent"
)
DEFAULT_USER = "used by the default agent (DISPATCHER_DEFAULT_AGENT)"
PROBLEMS = (
    "dispatcher: {0} problem(s), {1} warning(s): jobs would fail or never start until the "
    "problems are fixed\n"
)

COMMENTS = """\
version: 1
triggers:
  comments:
    on: {issue_comment: {contains: "/fix"}}
    prompt: fix it
"""


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _git_line() -> str:
    """The git line for the system's git (the one on /usr/bin:/bin)."""
    found = shutil.which("git", path="/usr/bin:/bin")
    assert found is not None
    said = subprocess.run([found, "version"], capture_output=True, text=True, check=True).stdout
    return f"ok       git: git {said.strip().removeprefix('git version ')} at {found}"


def _free_space(lines: list[str], where: Path) -> list[str]:
    """``lines`` with the free-space line (its number varies) checked and taken out."""
    shape = re.compile(
        rf"ok       free space: \d+\.\d GiB free on the file system of {re.escape(str(where))}"
    )
    found = [
        line
        for line in lines
        if line.startswith(("ok       free space:", "warning  free space:", "problem  free space:"))
    ]
    assert len(found) == 1 and shape.fullmatch(found[0]), found
    return [line for line in lines if line != found[0]]


def _closed_port() -> int:
    return free_port()  # bound and closed again: nothing listens there


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something listens on (connections wait in its backlog, never answered)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def _healthy(daemon_factory: Callable[..., Daemon], tmp_path: Path, **env: str) -> Daemon:
    """A daemon whose default agent (``mine``) is on its PATH, sandbox off (the same line
    on every machine), with ``env`` on top; not started."""
    bin_dir = tmp_path / "bin"
    _script(bin_dir / "my-agent", "cat > /dev/null")
    d = daemon_factory(
        **{
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "DISPATCHER_AGENTS": '{"mine": "my-agent --go"}',
            "DISPATCHER_DEFAULT_AGENT": "mine",
            "DISPATCHER_SANDBOX": "off",
            **env,
        }
    )
    for opt_in in ("IS_SANDBOX", "CLAUDE_CODE_BUBBLEWRAP"):  # no root opt-in from outside
        d.env.pop(opt_in, None)
    return d


def _add(d: Daemon, path: Path, name: str, forge_name: str | None = None) -> None:
    resp = d.api.post("/repos", json={"path": str(path), "name": name, "forge_name": forge_name})
    assert resp.status_code == 201, resp.text


def _repo(tmp_path: Path, name: str, triggers: str | None) -> Path:
    path = init_repo(tmp_path / name)
    if triggers is not None:
        commit_file(path, ".dispatcher/triggers.yml", triggers)
    return path


def _idle(*but: str) -> str:
    names = ", ".join(n for n in BUILTIN_PROFILES if n not in but)
    return (
        f"warning  agents unused: not found on the daemon's PATH, and nothing uses them: {names}; "
        "fix: install one in a directory on the daemon's PATH when you mean to use it "
        "(docs/agents.md)"
    )


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dispatcher_argv(), "doctor", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_healthy_set_up_is_all_ok_and_exits_0(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, listener: int
) -> None:
    notify = [{"type": "webhook", "url": f"http://127.0.0.1:{listener}/hook"}]
    d = _healthy(
        daemon_factory, tmp_path,
        DISPATCHER_GITHUB_WEBHOOK_SECRET="s3cret", DISPATCHER_NOTIFY=json.dumps(notify),
    ).start()  # fmt: skip
    app = _repo(tmp_path, "app", COMMENTS)
    _add(d, app, "app", forge_name="acme/app")

    result = d.cli("doctor")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = _free_space(result.stdout.splitlines(), d.state_dir)
    assert lines == [
        f"ok       daemon: {__version__} at {d.url}, 0 job(s) active",
        _git_line(),
        f"ok       state dir: {d.state_dir} is writable",
        "ok       sandbox: off (DISPATCHER_SANDBOX=off): agents run unsandboxed",
        f"ok       repo app: {app} (default branch main)",
        "ok       triggers app: 1 active: comments",
        "ok       webhooks app: acme/app: DISPATCHER_GITHUB_WEBHOOK_SECRET set",
        f"ok       agent mine: found at {tmp_path / 'bin' / 'my-agent'}; {DEFAULT_USER}, "
        "app's trigger comments",
        _idle(),
        f"ok       notify webhook http://127.0.0.1:{listener}/hook: 127.0.0.1:{listener} takes "
        "connections (DISPATCHER_NOTIFY)",
        "no problems, 1 warning(s)",
    ]

    as_json = d.cli("doctor", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [r["status"] for r in rows].count("ok") == len(rows) - 1
    assert rows[0] == {
        "check": "daemon", "status": "ok", "fix": None,
        "detail": f"{__version__} at {d.url}, 0 job(s) active",
    }  # fmt: skip
    assert [r["check"] for r in rows[1:]] == [r["check"] for r in d.api.get("/doctor").json()]


def test_the_doctor_route_needs_the_token(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = _healthy(daemon_factory, tmp_path).start()
    import httpx

    assert httpx.get(f"{d.url}/doctor", timeout=10).status_code == 401
    result = _doctor({**d.cli_env, "DISPATCHER_TOKEN": "not-the-token"})
    assert result.returncode == 1
    lines = _free_space(result.stdout.splitlines(), d.state_dir)
    assert lines == [
        f"ok       daemon: {__version__} at {d.url}, 0 job(s) active",
        f"problem  token: the daemon at {d.url} refused the token; fix: run this with the "
        f"daemon's state dir (DISPATCHER_STATE_DIR; its token is {d.state_dir / 'token'}) or "
        "its DISPATCHER_TOKEN",
        _git_line(),
        f"ok       state dir: {d.state_dir} is writable",
    ]


def test_no_daemon_is_a_problem_and_the_local_checks_still_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **base_env(tmp_path / "home"), "PATH": "/usr/bin:/bin", "DISPATCHER_URL": url,
        "DISPATCHER_STATE_DIR": str(state),
    }  # fmt: skip

    result = _doctor(env)

    assert result.returncode == 1
    assert result.stderr == PROBLEMS.format(1, 0)
    assert _free_space(result.stdout.splitlines(), tmp_path) == [
        f"problem  daemon: no daemon answers at {url}; fix: {START}",
        _git_line(),
        f"ok       state dir: {state} does not exist yet; the daemon makes it at start "
        f"({tmp_path} is writable)",
    ]

    as_json = _doctor(env, "--json")
    assert as_json.returncode == 1
    assert as_json.stderr == ""  # the list is the whole answer; the exit code says it all
    rows = json.loads(as_json.stdout)
    assert [(r["check"], r["status"]) for r in rows] == [
        ("daemon", "problem"),
        ("git", "ok"),
        ("state dir", "ok"),
        ("free space", "ok"),
    ]
    assert rows[0]["fix"] == START


def test_an_old_git_stops_the_daemon_and_is_a_problem(tmp_path: Path) -> None:
    fake = _script(tmp_path / "old" / "git", 'echo "git version 2.30.1"')
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **base_env(tmp_path / "home"),
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "DISPATCHER_URL": url,
        "DISPATCHER_STATE_DIR": str(tmp_path / "state"),
    }
    too_old = (
        f"git 2.30.1 ({fake}) is older than 2.38, which the dispatcher needs for git "
        "merge-tree --write-tree"
    )

    serve = subprocess.run(
        [*dispatcher_argv(), "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert serve.returncode == 1
    assert serve.stderr == f"dispatcher: {too_old}; install git 2.38 or later\n"
    assert not (tmp_path / "state").exists()  # refused before anything was made

    result = _doctor(env)
    assert result.returncode == 1
    assert result.stderr == PROBLEMS.format(2, 0)
    assert result.stdout.splitlines()[:2] == [
        f"problem  daemon: no daemon answers at {url}; fix: {START}",
        f"problem  git: {too_old}; fix: {GIT_FIX}",
    ]


def test_a_state_dir_under_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    state = tmp_path / "file" / "state"
    env = {
        **base_env(tmp_path / "home"),
        "DISPATCHER_URL": f"http://127.0.0.1:{_closed_port()}",
        "DISPATCHER_STATE_DIR": str(state),
    }

    result = _doctor(env)

    assert result.returncode == 1
    assert result.stderr == PROBLEMS.format(2, 0)
    assert result.stdout.splitlines()[2:] == [
        f"problem  state dir: {state}: {tmp_path / 'file'} is not a directory; "
        f"fix: {STATE_DIR_FIX.format(state)}",
    ]  # and no free-space line: there is no file system to ask


def _under_mount(mount: str, state: Path) -> subprocess.CompletedProcess[str]:
    """``dispatcher doctor`` (no daemon) with ``mount`` (a shell command, ``$0`` the state
    dir) done first in a mount namespace of its own: gone when the command ends, nothing
    to undo. Skips the test where mounts cannot be made (no unshare, no CAP_SYS_ADMIN)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) for a private mount")
    argv = [unshare, "-m", "sh", "-c", f'{mount} && exec "$@"', str(state)]
    env = {
        **base_env(state.parent / "home"),
        "DISPATCHER_URL": f"http://127.0.0.1:{_closed_port()}",
        "DISPATCHER_STATE_DIR": str(state),
    }
    probe = subprocess.run([*argv, "true"], env=env, capture_output=True, check=False, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount here: {probe.stderr.decode().strip()}")
    return subprocess.run(
        [*argv, *dispatcher_argv(), "doctor"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_read_only_state_dir_is_a_problem_even_for_root(tmp_path: Path) -> None:
    """Root writes through file modes, so the state dir is made read-only by a bind mount
    (in the command's own mount namespace)."""
    state = tmp_path / "state"
    state.mkdir()

    result = _under_mount('mount --bind -o ro "$0" "$0"', state)

    assert result.returncode == 1, result.stderr
    assert result.stderr == PROBLEMS.format(2, 0)
    assert result.stdout.splitlines()[2:] == [
        f"problem  state dir: cannot write in {state}: Read-only file system; "
        f"fix: {STATE_DIR_FIX.format(state)}",
    ]
    (state / "after").write_text("")  # the mount went with the command: writable again


@pytest.mark.parametrize(
    ("size", "status", "shown", "why"),
    [
        ("50m", "problem", "50 MiB", "jobs need room to run"),
        ("500m", "warning", "500 MiB", "less than 1 GiB"),
    ],
)
def test_little_free_space_is_a_warning_and_very_little_a_problem(
    tmp_path: Path, size: str, status: str, shown: str, why: str
) -> None:
    """The state dir on a small tmpfs: under 1 GiB free is a warning, under 100 MiB a
    problem."""
    state = tmp_path / "state"
    state.mkdir()

    result = _under_mount(f'mount -t tmpfs -o size={size} tmpfs "$0"', state)

    assert result.returncode == 1  # the daemon is not there either
    assert result.stdout.splitlines()[2:] == [
        f"ok       state dir: {state} is writable",
        f"{status:<7}  free space: {shown} free on the file system of {state}; {why}; "
        "fix: free some space (finished jobs' worktrees: `dispatcher discard`), or move the "
        "state dir",
    ]
    problems = 2 if status == "problem" else 1
    assert result.stderr == PROBLEMS.format(problems, 2 - problems)


def test_a_missing_or_blocked_agent_says_which_and_how_to_fix(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The default agent (claude) is found but refuses to run as root; triggers name
    codex, which is not installed, a profile that does not exist, and the repo's own
    profile whose program is not installed."""
    _script(tmp_path / "bin" / "claude", 'echo "9.9.9 (Claude Code)"')
    d = _healthy(daemon_factory, tmp_path, DISPATCHER_DEFAULT_AGENT="claude").start()
    triggers = """\
version: 1
agents:
  lint-bot: ["no-such-linter", "--fix"]
triggers:
  lint:
    on: push
    agent: lint-bot
    prompt: lint
  review:
    on: push
    agent: codex
    prompt: review
  odd:
    on: push
    agent: nosuch
    prompt: odd
"""
    _add(d, _repo(tmp_path, "app", triggers), "app")

    result = d.cli("doctor", check=False)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    codex = (
        "problem  agent codex: 'codex' not found on the daemon's PATH; used by app's trigger "
        f"review; fix: {NOT_FOUND_FIX}"
    )
    assert codex in lines
    assert (
        "problem  agent nosuch: no such agent profile; used by app's trigger odd; fix: name a "
        "built-in agent (`dispatcher agents` lists them), or define it in DISPATCHER_AGENTS "
        "or the repo's agents:"
    ) in lines
    assert (
        "problem  agent lint-bot (app's agents:): 'no-such-linter' not found on the daemon's "
        f"PATH; used by app's trigger lint; fix: {NOT_FOUND_FIX}"
    ) in lines
    assert _idle("claude", "codex") in lines
    mine = tmp_path / "bin" / "my-agent"  # defined, unused: still ok
    assert (
        f"ok       agent mine: found at {mine}; not used by the default agent or any trigger"
        in lines
    )
    if os.geteuid() == 0:  # we run as root: Claude Code refuses its bypass mode
        assert (
            "problem  agent claude: Claude Code refuses bypassPermissions as root; "
            f"{DEFAULT_USER}; fix: run the daemon as a normal user, or start it with IS_SANDBOX=1 to let Claude "
            "run as root in the daemon's sandbox (docs/agents/claude.md)"
        ) in lines
        assert result.stderr == PROBLEMS.format(4, 1)
    else:
        assert (
            f"ok       agent claude: 9.9.9 (Claude Code) at {tmp_path / 'bin' / 'claude'}; "
            f"{DEFAULT_USER}" in lines
        )
        assert result.stderr == PROBLEMS.format(3, 1)


def test_a_broken_trigger_file_is_reported_at_its_line(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    broken = (
        "version: 1\ntriggers:\n  nightly:\n    on: {pushed: {}}\n    prompt: go\n"
        "  other:\n    on: push\n    promt: go\n"
    )
    d = _healthy(daemon_factory, tmp_path).start()
    app = _repo(tmp_path, "app", broken)
    _add(d, app, "app")
    problem, *more = check(broken, filename="app:.dispatcher/triggers.yml")
    assert str(problem).startswith("app:.dispatcher/triggers.yml:4: ")
    assert more  # several problems, still one line: the first and how many more

    result = d.cli("doctor", check=False)

    assert result.returncode == 1
    assert result.stderr == PROBLEMS.format(1, 1)
    assert (
        f"problem  triggers app: {problem} (and {len(more)} more); fix: fix "
        ".dispatcher/triggers.yml and commit it on "
        f"main (`dispatcher triggers check {app}` lists every problem); the last good file "
        "stays active until then"
    ) in result.stdout.splitlines()


def test_a_forge_trigger_without_a_webhook_secret(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A trigger only a forge fires, with no secret: every delivery would be refused (a
    problem). One that local refs fire too (push): a warning."""
    d = _healthy(daemon_factory, tmp_path).start()
    _add(d, _repo(tmp_path, "app", COMMENTS), "app", forge_name="acme/app")
    pushes = "version: 1\ntriggers:\n  build:\n    on: push\n    prompt: build\n"
    _add(d, _repo(tmp_path, "lib", pushes), "lib", forge_name="acme/lib")
    _add(d, _repo(tmp_path, "local", COMMENTS), "local")  # no forge name

    result = d.cli("doctor", check=False)

    assert result.returncode == 1
    assert result.stderr == PROBLEMS.format(1, 3)
    lines = result.stdout.splitlines()
    assert (
        "problem  webhooks app: no webhook secret is set: every forge delivery for acme/app is "
        f"refused, and trigger(s) comments fire only from the forge; fix: {SECRETS_FIX}"
    ) in lines
    assert (
        "warning  webhooks lib: no webhook secret is set: every forge delivery for acme/lib is "
        f"refused; local refs still fire trigger(s) build; fix: {SECRETS_FIX}"
    ) in lines
    assert (
        "warning  webhooks local: trigger(s) comments fire only from forge events, but the repo "
        "has no forge name, so no forge delivery reaches it (only POST /events); fix: register "
        "it with --forge-name OWNER/NAME (or with an origin remote on the forge)"
    ) in lines


def test_an_unreachable_notify_target_is_a_warning(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Nothing is sent; a target whose host takes no connection is a warning (jobs end as
    they would, their notifications fail), so the exit code stays 0."""
    closed, other = _closed_port(), _closed_port()
    notify = [{"type": "webhook", "url": f"http://127.0.0.1:{closed}/hook?token=abc"}]
    d = _healthy(daemon_factory, tmp_path, DISPATCHER_NOTIFY=json.dumps(notify)).start()
    repo_notify = f"version: 1\nnotify:\n  - type: ntfy\n    url: http://127.0.0.1:{other}/jobs\n"
    _add(d, _repo(tmp_path, "app", repo_notify), "app")

    result = d.cli("doctor")

    assert result.returncode == 0, result.stderr
    fix = "check the URL, and that its host is up and reachable from the daemon's machine"
    assert result.stdout.splitlines()[-3:] == [
        f"warning  notify webhook http://127.0.0.1:{closed}/hook?token=***: cannot connect to "
        f"127.0.0.1:{closed}: Connection refused (DISPATCHER_NOTIFY): its notifications would "
        f"fail; fix: {fix}",
        f"warning  notify ntfy http://127.0.0.1:{other}/jobs: cannot connect to "
        f"127.0.0.1:{other}: Connection refused (app's trigger file): its notifications would "
        f"fail; fix: {fix}",
        "no problems, 3 warning(s)",
    ]
