"""The CLI's faces, end to end against the real daemon: long prompts from a file or stdin,
times in the listings, failed and timed-out jobs with commits in the inbox, and every
failure line starting with ``dispatcher:``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.daemon_fixture import Daemon, dispatcher_argv
from tests.gitutil import commit_file
from tests.waiting import wait_until

Agent = Callable[[str, str], str]

COPY_PROMPT = 'cat > GOT.txt\ncp "$DISPATCHER_PROMPT_FILE" FILE.txt\n'

MAX_PROMPT = 1_000_000  # characters: JobCreate.prompt and FollowupCreate.prompt allow this many


def _cli(
    d: Daemon, *args: str, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The CLI as ``d.cli`` runs it, with ``stdin`` (bytes) and more environment."""
    proc = subprocess.run(
        [*dispatcher_argv(), *args],
        env={**d.cli_env, **env}, input=stdin or b"", capture_output=True, timeout=120,
        check=False,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def _big_prompt(chars: int) -> str:
    """``chars`` characters, many of them two to four bytes in UTF-8, with shell syntax and
    line ends of both kinds: more than ``chars`` bytes."""
    unit = "fix the $(parser) `now` for é, ß and 🙂; keep \"quotes\" and 'these'\r\n"
    return (unit * (chars // len(unit) + 1))[:chars]


def _worktree(d: Daemon, job_id: int) -> Path:
    return Path(d.job(job_id)["worktree"])


# ------------------------------------------------------------------ long prompts


def test_a_megabyte_prompt_from_a_file_or_stdin_reaches_the_agent_intact(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    script = agent("copy.sh", COPY_PROMPT)
    prompt = _big_prompt(MAX_PROMPT)
    assert len(prompt.encode()) > 2**20  # more than a command line takes (and than 1 MiB)
    path = tmp_path / "prompt.md"
    path.write_bytes(prompt.encode())

    by_file = _cli(daemon, "run", name, "--prompt-file", str(path), "--command", script, "--wait")
    by_stdin = _cli(
        daemon, "run", name, "--prompt", "-", "--command", script, "--wait",
        stdin=prompt.encode(),
    )  # fmt: skip
    for result in (by_file, by_stdin):
        assert result.returncode == 0, result.stderr
        job_id = int(result.stdout)
        worktree = _worktree(daemon, job_id)
        # Byte for byte, on stdin and in the prompt file: "\r\n" kept, nothing trimmed.
        assert (worktree / "GOT.txt").read_bytes() == prompt.encode()
        assert (worktree / "FILE.txt").read_bytes() == prompt.encode()
        assert daemon.job(job_id)["prompt"] == prompt


def test_a_prompt_over_the_limit_is_refused_in_one_line(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    path = tmp_path / "prompt.md"
    path.write_text(_big_prompt(MAX_PROMPT + 1))
    result = _cli(daemon, "run", name, "--prompt-file", str(path), "--command", "true")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatcher: ") and "prompt" in line, line
    assert "1000000" in line, line
    assert daemon.api.get("/jobs", params={"repo": name}).json()["items"] == []


def test_followup_takes_its_prompt_from_a_file_or_stdin(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    first = daemon.wait(daemon.submit(name, "start", command=[agent("copy.sh", COPY_PROMPT)])["id"])
    path = tmp_path / "next.md"
    path.write_text("now the tests\nand the docs\n")
    second = _cli(daemon, "followup", str(first["id"]), "--prompt-file", str(path), "--wait")
    assert second.returncode == 0, second.stderr
    assert (_worktree(daemon, int(second.stdout)) / "GOT.txt").read_text() == path.read_text()
    third = _cli(daemon, "followup", second.stdout.strip(), "-", "--wait", stdin=b"and a fix")
    assert third.returncode == 0, third.stderr
    assert (_worktree(daemon, int(third.stdout)) / "GOT.txt").read_text() == "and a fix"


# ------------------------------------------------------------------ times

TZ_PLUS_0530 = "XST-5:30"  # a POSIX TZ: local time 5h30 ahead of UTC, no tzdata needed


def _local(stamp: str) -> str:
    """``stamp`` (the API's UTC ISO 8601) as the CLI prints it under TZ_PLUS_0530."""
    zone = timezone(timedelta(hours=5, minutes=30))
    return datetime.fromisoformat(stamp).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def test_events_jobs_show_and_inbox_print_local_times(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    _cli(daemon, "issue", name, "crash on empty input", TZ=TZ_PLUS_0530)
    job = daemon.wait(daemon.submit(name, "note it", command=[agent("n.sh", COPY_PROMPT)])["id"])
    (event,) = daemon.api.get("/events", params={"repo": name}).json()

    (line,) = _cli(daemon, "events", "--repo", name, TZ=TZ_PLUS_0530).stdout.splitlines()
    assert line.startswith(f"{event['id']:>5}  {_local(event['created_at'])}  {name}"), line
    listing = _cli(daemon, "jobs", "--repo", name, TZ=TZ_PLUS_0530).stdout.splitlines()
    assert "CREATED" in listing[0]
    assert listing[1].startswith(f"{job['id']:>5}  succeeded  {_local(job['created_at'])}  ")
    shown = _cli(daemon, "show", str(job["id"]), TZ=TZ_PLUS_0530).stdout
    for key in ("created_at", "started_at", "finished_at"):
        assert f"{key:<14} {_local(job[key])}\n" in shown
    inbox = _cli(daemon, "inbox", "--limit", "500", TZ=TZ_PLUS_0530).stdout
    assert f"  {_local(job['finished_at'])}\n" in inbox
    # The JSON keeps the API's UTC times.
    assert (
        json.loads(_cli(daemon, "show", str(job["id"]), "--json").stdout)["created_at"]
        == (job["created_at"])
    )


# ------------------------------------------------------------------ the inbox


def test_inbox_shows_failed_and_timed_out_jobs_with_commits_marked(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    release = tmp_path / "release"
    ok = daemon.submit(name, "works", command=[agent("ok.sh", "echo ok > OK.txt\n")])
    failed = daemon.submit(name, "breaks", command=[agent("f.sh", "echo half > H.txt\nexit 3\n")])
    bare = daemon.submit(name, "breaks at once", command=[agent("b.sh", "exit 1\n")])
    slow = agent("slow.sh", "echo part > P.txt\ngit add P.txt\ngit commit -qm part\nsleep 60\n")
    timed = daemon.submit(name, "too slow", command=[slow], timeout_minutes=0.05)  # 3 s
    wait_for_release = f'echo c > C.txt\nwhile [ ! -f "{release}" ]; do sleep 0.02; done\n'
    stopped = daemon.submit(name, "stopped", command=[agent("c.sh", wait_for_release)])
    daemon.wait(stopped["id"], {"running"})
    written = _worktree(daemon, stopped["id"]) / "C.txt"
    wait_until(written.exists, "the agent to write C.txt", 30)
    daemon.api.post(f"/jobs/{stopped['id']}/cancel")
    ends = {j["id"]: daemon.wait(j["id"], timeout=60) for j in (ok, failed, bare, timed, stopped)}
    assert [ends[j["id"]]["state"] for j in (ok, failed, bare, timed, stopped)] == [
        "succeeded", "failed", "failed", "timed_out", "canceled",
    ]  # fmt: skip
    assert ends[timed["id"]]["commits_ahead"] == 1
    assert ends[stopped["id"]]["commits_ahead"] == 1  # with work, yet stopped on purpose

    listed = [
        j for j in daemon.api.get("/inbox", params={"limit": 500}).json() if j["repo"] == name
    ]
    assert [(j["id"], j["state"]) for j in listed] == [
        (timed["id"], "timed_out"), (failed["id"], "failed"), (ok["id"], "succeeded"),
    ]  # fmt: skip
    out = _cli(daemon, "inbox", "--limit", "500").stdout.splitlines()
    heads = {int(line.split()[0]): line for line in out if line[:5].strip().isdigit()}
    assert heads[failed["id"]].endswith("  [failed, has commits]")
    assert heads[timed["id"]].endswith("  [timed out, has commits]")
    assert "has commits]" not in heads[ok["id"]]
    assert bare["id"] not in heads and stopped["id"] not in heads
    errors = [line for line in out if line.startswith("       error: ")]
    assert f"       error: {ends[failed['id']]['error']}" in errors
    # Merging the failed job's work takes it out of the inbox.
    assert daemon.cli("merge", str(failed["id"])).returncode == 0
    left = [j["id"] for j in daemon.api.get("/inbox", params={"limit": 500}).json()]
    assert failed["id"] not in left and timed["id"] in left


# ------------------------------------------------------------------ failure lines


def _failure(result: subprocess.CompletedProcess[str], says: str, code: int = 1) -> None:
    """The command failed with ``code``, every stderr line ``dispatcher: ...``, one saying
    ``says``; and no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert lines, "nothing on stderr"
    assert all(line.startswith("dispatcher: ") for line in lines), result.stderr
    assert any(says in line for line in lines), result.stderr


def test_run_and_followup_wait_say_how_the_job_ended(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    fail = agent("fail.sh", "echo oops >&2\nexit 3\n")
    result = _cli(daemon, "run", name, "--prompt", "x", "--command", fail, "--wait")
    job_id = int(result.stdout)
    _failure(result, f"dispatcher: job {job_id} failed: {daemon.job(job_id)['error']}")
    assert "exit 3" in result.stderr

    as_json = _cli(daemon, "run", name, "--prompt", "x", "--command", fail, "--wait", "--json")
    job = json.loads(as_json.stdout)
    _failure(as_json, f"dispatcher: job {job['id']} failed")
    assert job["state"] == "failed"

    slow = agent("slow.sh", "sleep 60\n")
    timed = _cli(daemon, "run", name, "--prompt", "x", "--command", slow, "--timeout", "0.02",
                 "--wait")  # fmt: skip
    _failure(timed, f"dispatcher: job {int(timed.stdout)} timed out")

    again = _cli(daemon, "followup", str(job_id), "try again", "--wait")
    _failure(again, f"dispatcher: job {int(again.stdout)} failed")


def test_every_failing_command_says_dispatcher_first(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    edit = agent("edit.sh", "echo agent > README.md\n")
    job = daemon.wait(daemon.submit(name, command=[edit])["id"])
    commit_file(repo, "README.md", "user\n", "user edit")
    _failure(daemon.cli("merge", str(job["id"]), check=False), "conflict")
    done = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    (repo / "src" / "app.py").write_text("my unsaved work\n")
    _failure(daemon.cli("merge", str(done["id"]), check=False), "src/app.py")
    _failure(daemon.cli("cancel", str(done["id"]), check=False), f"job {done['id']}")
    _failure(daemon.cli("logs", "999999", check=False), "999999")
    _failure(daemon.cli("logs", str(done["id"]), "--tail", "0", check=False), "--tail")
    _failure(daemon.cli("diff", "999999", check=False), "999999")
    _failure(daemon.cli("show", "999999", check=False), "999999")
    _failure(daemon.cli("run", "no-such-repo", "--prompt", "x", check=False), "no-such-repo")
    _failure(daemon.cli("repo", "show", "no-such-repo", check=False), "no-such-repo")
    _failure(daemon.cli("events", "--repo", "no-such-repo", check=False), "no-such-repo")
    _failure(daemon.cli("followup", "999999", "x", check=False), "999999")

    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\ntriggers:\n  x:\n    on: {push: {}}\n    promt: hi\n")
    checked = daemon.cli("triggers", "check", str(bad), check=False)
    _failure(checked, f"dispatcher: {bad}:5:")
    _failure(daemon.cli("triggers", "check", str(tmp_path / "none.yml"), check=False), "none.yml")


@pytest.mark.parametrize(
    "args", [["run", "app", "--prompt", "x", "--agent", "a", "--command", "b"], ["--bogus"]]
)
def test_failures_before_the_daemon_say_dispatcher_first(daemon: Daemon, args: list[str]) -> None:
    result = daemon.cli(*args, check=False)
    assert result.returncode in (1, 2)
    _failure(result, "", code=result.returncode)
