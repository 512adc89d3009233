"""End to end: trigger files and every event source, against the real daemon."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.process import sandbox
from tests.daemon_fixture import Daemon, pid_alive
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
needs_bwrap = pytest.mark.skipif(
    sandbox.probe("bwrap")[0] is None, reason="bubblewrap cannot run here (.ci/run installs it)"
)
GITHUB_SECRET = "gh-secret-for-tests"
GITLAB_TOKEN = "gl-token-for-tests"

# Writes the prompt it got into PROMPT.txt in its worktree.
PROMPT_AGENT = 'cat > PROMPT.txt\necho "trigger job $DISPATCHER_JOB_ID"\n'


def trigger_repo(tmp_path: Path, agent: Agent, triggers_yml: str, name: str = "app") -> Path:
    """A repo whose main has ``.dispatcher/triggers.yml``; agent `bot` is PROMPT_AGENT."""
    script = agent("bot.sh", PROMPT_AGENT)
    text = triggers_yml.replace("BOT", script)
    return init_repo(
        tmp_path / name,
        files={
            "README.md": "hello\n",
            "src/app.py": "print('hi')\n",
            ".dispatcher/triggers.yml": text,
        },
    )


def jobs_of(d: Daemon, repo: str) -> list[dict[str, Any]]:
    return list(d.api.get("/jobs", params={"repo": repo, "limit": 500}).json()["items"])


# Most of these waits ask the daemon's API: back off to 0.25 s between polls.
wait_for = partial(wait_until, max_interval=0.25)


def prompt_of(job: dict[str, Any]) -> str:
    return (Path(job["worktree"]) / "PROMPT.txt").read_text()


def first_job(d: Daemon, repo: str, what: str) -> dict[str, Any]:
    """The newest job of ``repo``, once there is one."""
    return wait_for(lambda: jobs_of(d, repo), what)[0]


def edit_db(d: Daemon, sql: str) -> None:
    """Run ``sql`` on the stopped daemon's database, as a crash or another version leaves it."""
    db = sqlite3.connect(d.state_dir / "dispatcher.db")
    with db:
        db.execute(sql)
    db.close()


@pytest.fixture
def tdaemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory(
        DISPATCHER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET,
        DISPATCHER_GITLAB_WEBHOOK_TOKEN=GITLAB_TOKEN,
        DISPATCHER_REF_POLL_SECONDS="0.5",
        DISPATCHER_MAX_PARALLEL="8",
        DISPATCHER_MAX_PARALLEL_PER_REPO="8",
    ).start()


AddRepo = Callable[[str], tuple[Path, str]]


@pytest.fixture
def add_trigger_repo(tdaemon: Daemon, tmp_path: Path, agent: Agent) -> AddRepo:
    """Makes a :func:`trigger_repo` with the given trigger file and adds it to ``tdaemon``:
    returns the repo and its name there."""

    def add(triggers_yml: str) -> tuple[Path, str]:
        repo = trigger_repo(tmp_path, agent, triggers_yml)
        return repo, tdaemon.add_repo(repo)

    return add


PUSH_YML = """\
version: 1
agents: {bot: BOT}
defaults: {agent: bot}
triggers:
  on-main:
    on:
      push: {branches: [main], paths: ["src/**"]}
    prompt: "main moved to ${{ event.after }} (${{ event.head_commit.message }})"
"""


# ------------------------------------------------------------------ local refs


def test_commit_to_main_makes_one_job_and_filters_hold(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    assert tdaemon.api.get(f"/repos/{name}").json()["triggers"] == ["on-main"]
    # A path outside the filter, and a commit on another branch: no job.
    commit_file(repo, "docs/notes.md", "x\n", "docs only")
    git(repo, "checkout", "-q", "-b", "dev")
    commit_file(repo, "src/dev.py", "dev\n", "dev work")
    git(repo, "checkout", "-q", "main")
    sha = commit_file(repo, "src/app.py", "print('bye')\n", "change app")
    job = first_job(tdaemon, name, "a push job")
    job = tdaemon.wait(job["id"])
    assert job["state"] == "succeeded", job
    assert job["trigger"] == "on-main"
    assert job["base"] == sha
    assert prompt_of(job) == f"main moved to {sha} (change app)"
    event = tdaemon.api.get(f"/events/{job['event_id']}").json()
    assert event["kind"] == "push"
    assert event["jobs"] == [job["id"]]
    # The earlier moves were seen and stored, but matched nothing.
    kinds = {(e["kind"], e["action"]) for e in tdaemon.api.get("/events").json()}
    assert ("pull_request", "opened") in kinds
    assert len(jobs_of(tdaemon, name)) == 1


def test_daemon_down_while_commits_land_catches_up_exactly_once(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    tdaemon.stop(signal.SIGTERM)
    commit_file(repo, "src/a.py", "a\n", "first while down")
    last = commit_file(repo, "src/b.py", "b\n", "second while down")
    git(repo, "pack-refs", "--all")
    tdaemon.start()
    job = first_job(tdaemon, name, "the catch-up job")
    assert job["base"] == last
    tdaemon.wait(job["id"])
    tdaemon.stop(signal.SIGTERM)
    tdaemon.start()
    # Another start: still exactly one job. A later move of main that matches no
    # trigger marks the point: once its event is stored, the restarted daemon has
    # scanned the refs it found at start (a fixed wait may see no scan at all).
    marker = commit_file(repo, "docs/later.md", "later\n", "docs after the restart")
    seen = wait_for(
        lambda: [
            e for e in tdaemon.api.get("/events").json() if e["payload"].get("after") == marker
        ],
        "the event of the later commit",
    )
    assert [e["jobs"] for e in seen] == [[]]
    assert len(jobs_of(tdaemon, name)) == 1
    assert tdaemon.api.get("/health").json()["jobs_active"] == 0


# ------------------------------------------------------------------ checks

# How each check trigger file below starts: trigger red-tests runs on a push to main.
CHECK_HEAD = """\
version: 1
agents: {bot: BOT}
triggers:
  red-tests:
    on: {push: {branches: [main]}}
    agent: bot
"""

CHECK_YML = (
    CHECK_HEAD
    + """\
    check: "if [ -f BROKEN ]; then echo 'FAILED: test_thing expected 1 got 2'; exit 1; fi; echo all good"
    prompt: "The tests fail:\\n${{ check.output_tail }}\\nFix it."
"""
)


def test_failing_check_dispatches_with_output_and_passing_check_does_not(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(CHECK_YML)
    commit_file(repo, "ok.txt", "fine\n", "green commit")
    event = wait_for(
        lambda: [
            e for e in tdaemon.api.get("/events").json() if any("passed" in n for n in e["notes"])
        ],
        "the passing check",
    )[0]
    assert event["jobs"] == []
    assert jobs_of(tdaemon, name) == []
    commit_file(repo, "BROKEN", "x\n", "red commit")
    job = tdaemon.wait(first_job(tdaemon, name, "a job after the red check")["id"])
    assert job["trigger"] == "red-tests"
    assert prompt_of(job) == "The tests fail:\nFAILED: test_thing expected 1 got 2\nFix it."
    # The check's worktree is gone; only the job's remains.
    assert not any((tdaemon.state_dir / "checks").iterdir())
    assert len(git(repo, "worktree", "list").splitlines()) == 2


PRYING_CHECK_YML = (
    CHECK_HEAD
    + """\
    check: "cat STATE/token; ls -A STATE; cat REPO/secret.txt; echo tail-end; exit 1"
    prompt: "${{ check.output_tail }}"
"""
)


@needs_bwrap
def test_a_check_runs_in_the_sandbox_and_cannot_read_the_token_or_the_checkout(
    tdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """A check runs the event commit's code (a pushed conftest.py): boxed like an agent."""
    text = PRYING_CHECK_YML.replace("STATE", str(tdaemon.state_dir))
    repo = trigger_repo(tmp_path, agent, text.replace("REPO", str(tmp_path / "app")))
    (repo / "secret.txt").write_text("the user's secret\n")
    name = tdaemon.add_repo(repo)
    commit_file(repo, "ok.txt", "fine\n", "a commit")
    job = tdaemon.wait(first_job(tdaemon, name, "the job of the check")["id"])
    seen = prompt_of(job)
    assert seen.rstrip().endswith("tail-end"), seen  # it ran, and its output came through
    assert tdaemon.token not in seen
    assert "the user's secret" not in seen and "dispatcher.db" not in seen, seen
    assert not any((tdaemon.state_dir / "checks").iterdir())


GATED_CHECK_YML = (
    CHECK_HEAD
    + """\
    check: "echo run >> GATES/runs; echo $$ > GATES/pid.tmp; mv GATES/pid.tmp GATES/pid; while [ ! -f GATES/go ]; do sleep 0.05; done; test ! -f BROKEN"
    prompt: "red: ${{ check.exit_code }}"
"""
)


def gated_check_repo(add_trigger_repo: AddRepo, tmp_path: Path) -> tuple[Path, str, Path]:
    """A repo (added to the daemon: its path, name and gates) whose push trigger runs a check
    that waits for ``<gates>/go`` and fails when the file BROKEN exists; each run appends to
    ``<gates>/runs`` and writes its pid to ``<gates>/pid``."""
    gates = tmp_path / "gates"
    gates.mkdir()
    repo, name = add_trigger_repo(GATED_CHECK_YML.replace("GATES", str(gates)))
    return repo, name, gates


def check_runs(gates: Path) -> int:
    runs = gates / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def running_with(text: str) -> list[int]:
    """Host pids of the live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def the_event(d: Daemon) -> dict[str, Any]:
    events = d.api.get("/events").json()
    assert len(events) == 1, events
    return dict(events[0])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_check_cut_short_by_the_daemon_runs_again_at_the_next_start(
    sig: signal.Signals, tdaemon: Daemon, tmp_path: Path, add_trigger_repo: AddRepo
) -> None:
    repo, name, gates = gated_check_repo(add_trigger_repo, tmp_path)
    commit_file(repo, "BROKEN", "x\n", "red commit")
    wait_for(lambda: (gates / "pid").exists(), "the check to start")
    # Its host pids (its $$ is the sandbox's): every process whose command line has it.
    check_pids = running_with(str(gates))
    assert check_pids
    assert the_event(tdaemon)["pending_triggers"] == ["red-tests"]
    listed = tdaemon.cli("events").stdout.splitlines()
    assert len(listed) == 1 and "push" in listed[0] and listed[0].endswith("pending: red-tests")
    started = time.monotonic()
    tdaemon.stop(sig, timeout=20)
    # A stop does not wait for the check (it may run for minutes): it is killed.
    assert time.monotonic() - started < 10
    if sig == signal.SIGTERM:
        wait_for(lambda: not any(map(pid_alive, check_pids)), "the stopped daemon's check to end")
    (gates / "pid").unlink()
    tdaemon.start()
    # A crashed daemon's check is killed by the next one (its pid was recorded).
    wait_for(lambda: not any(map(pid_alive, check_pids)), "the old check to be killed")
    wait_for(lambda: (gates / "pid").exists(), "the check to run again")
    assert check_runs(gates) == 2
    assert jobs_of(tdaemon, name) == []  # an interrupted check decided nothing
    (gates / "go").touch()
    job = tdaemon.wait(first_job(tdaemon, name, "the job of the red check")["id"])
    assert job["trigger"] == "red-tests"
    assert prompt_of(job) == "red: 1"
    event = wait_for(lambda: (e := the_event(tdaemon))["pending_triggers"] == [] and e, "check end")
    assert "trigger red-tests: check run again after a restart" in event["notes"]
    assert event["jobs"] == [job["id"]]
    listed = tdaemon.cli("events").stdout
    assert f"jobs {job['id']}" in listed and "pending" not in listed
    assert json.loads(tdaemon.cli("events", "--json").stdout)[0]["pending_triggers"] == []
    assert not any((tdaemon.state_dir / "checks").iterdir())
    assert len(git(repo, "worktree", "list").splitlines()) == 2  # the checkout and the job


def test_check_of_an_event_caught_up_at_start_runs_once(
    tdaemon: Daemon, tmp_path: Path, add_trigger_repo: AddRepo
) -> None:
    repo, name, gates = gated_check_repo(add_trigger_repo, tmp_path)
    tdaemon.stop(signal.SIGTERM)
    commit_file(repo, "BROKEN", "x\n", "red while down")
    tdaemon.start()  # the catch-up event's check starts; resuming must not start it again
    wait_for(lambda: (gates / "pid").exists(), "the check to start")
    (gates / "go").touch()
    job = tdaemon.wait(first_job(tdaemon, name, "the job of the red check")["id"])
    event = wait_for(lambda: (e := the_event(tdaemon))["pending_triggers"] == [] and e, "check end")
    assert check_runs(gates) == 1
    assert event["notes"] == [
        "trigger red-tests: check exited 1",
        f"trigger red-tests: job {job['id']}",
    ]


def test_trigger_left_undecided_by_a_crash_is_dispatched_at_the_next_start(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    commit_file(repo, "src/a.py", "a\n", "feature")
    first = tdaemon.wait(first_job(tdaemon, name, "the push job")["id"])
    tdaemon.stop(signal.SIGTERM)
    # What a crash right after storing an event (before its job) leaves: the event,
    # its trigger pending, no job. (A redelivery would be a duplicate: no second chance.)
    edit_db(
        tdaemon,
        "INSERT INTO event (repo_id, kind, action, source, dedup_key, payload, facts, "
        "matched, notes, pending_triggers, created_at) SELECT repo_id, kind, action, "
        "source, dedup_key || ':again', payload, facts, matched, '[]', matched, created_at "
        "FROM event WHERE id = 1",
    )
    tdaemon.start()
    jobs = wait_for(lambda: len(j := jobs_of(tdaemon, name)) == 2 and j, "the taken-up job")
    again = tdaemon.wait(jobs[0]["id"])
    assert again["trigger"] == "on-main" and again["prompt"] == first["prompt"]
    event = tdaemon.api.get("/events/2").json()
    assert event["pending_triggers"] == []
    assert event["notes"] == [
        "trigger on-main: taken up after a restart",
        f"trigger on-main: job {again['id']}",
    ]
    assert event["jobs"] == [again["id"]]
    tdaemon.stop(signal.SIGTERM)
    tdaemon.start()  # once taken up, never again
    assert [j["id"] for j in jobs_of(tdaemon, name)] == [again["id"], first["id"]]


def test_an_event_that_cannot_be_taken_up_is_noted_and_the_daemon_starts(
    tdaemon: Daemon, tmp_path: Path, add_trigger_repo: AddRepo
) -> None:
    repo, _, gates = gated_check_repo(add_trigger_repo, tmp_path)
    (gates / "go").touch()
    commit_file(repo, "ok.txt", "x\n", "green commit")
    wait_for(lambda: check_runs(gates) == 1 and not the_event(tdaemon)["pending_triggers"], "end")
    tdaemon.stop(signal.SIGTERM)
    # A row an older or newer version wrote, that this one cannot read back.
    edit_db(tdaemon, "UPDATE event SET pending_triggers = '[\"red-tests\"]', facts = '{\"x\": 1}'")
    tdaemon.start()
    event = the_event(tdaemon)
    assert event["pending_triggers"] == []
    assert any(
        n.startswith("trigger red-tests: not taken up after a restart: ") for n in event["notes"]
    )
    assert check_runs(gates) == 1


def test_pending_check_whose_job_exists_or_whose_trigger_is_gone_is_not_run_again(
    tdaemon: Daemon, tmp_path: Path, add_trigger_repo: AddRepo
) -> None:
    repo, name, gates = gated_check_repo(add_trigger_repo, tmp_path)
    (gates / "go").touch()
    commit_file(repo, "ok.txt", "x\n", "green commit")
    wait_for(lambda: check_runs(gates) == 1 and not tdaemon.api.get("/events/1").json()[
        "pending_triggers"], "the green check's end")  # fmt: skip
    commit_file(repo, "BROKEN", "x\n", "red commit")
    job = first_job(tdaemon, name, "the job of the red check")
    wait_for(lambda: not tdaemon.api.get("/events/2").json()["pending_triggers"], "the check's end")
    tdaemon.stop(signal.SIGTERM)
    # As a crash would leave them: event 2 between its job and its check's end; event 1
    # with its check unfinished, while the trigger file loses the check.
    no_check = """\
version: 1
triggers:
  red-tests:
    on: {push: {branches: [x]}}
    agent: claude
    prompt: "no check"
"""
    commit_file(repo, ".dispatcher/triggers.yml", no_check, "drop the check")
    edit_db(tdaemon, "UPDATE event SET pending_triggers = '[\"red-tests\"]' WHERE id IN (1, 2)")
    tdaemon.start()
    wait_for(
        lambda: all(not tdaemon.api.get(f"/events/{i}").json()["pending_triggers"] for i in (1, 2)),
        "the pending checks to clear",
    )
    notes = {i: tdaemon.api.get(f"/events/{i}").json()["notes"] for i in (1, 2)}
    assert any("not taken up after a restart" in n for n in notes[1]), notes
    assert not any("after a restart" in n for n in notes[2]), notes
    assert check_runs(gates) == 2  # neither ran again
    assert [j["id"] for j in jobs_of(tdaemon, name)] == [job["id"]]


# ------------------------------------------------------------------ trigger file errors


def test_broken_trigger_file_reports_file_line_and_last_good_stays_active(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    broken = PUSH_YML.replace("BOT", "x").replace("    prompt:", "    prompt-flie:")
    commit_file(repo, ".dispatcher/triggers.yml", broken, "break the trigger file")
    shown = wait_for(
        lambda: (r := tdaemon.api.get(f"/repos/{name}").json())["triggers_error"] and r,
        "the trigger error",
    )
    assert ".dispatcher/triggers.yml:8:" in shown["triggers_error"]
    assert "prompt-flie" in shown["triggers_error"]
    assert shown["triggers"] == ["on-main"]
    out = tdaemon.cli("repo", "show", name).stdout
    assert "triggers.yml:8:" in out
    # The last good trigger still fires.
    commit_file(repo, "src/x.py", "x\n", "still works")
    job = first_job(tdaemon, name, "a job from the last good file")
    assert job["trigger"] == "on-main"


SEVERAL_PROBLEMS_YML = """\
version: 1
triggers:
  fix:
    on: push
    timeout-minutes: 0
    prompt: "${{ event.issue.title }}"
  nightly:
    on:
      schedule: [{cron: "0 25 * * *"}]
    promt: x
"""
SEVERAL_PROBLEMS = [  # (line, start of the message): a template error beside schema errors
    (5, "triggers.fix.timeout-minutes: Input should be greater than 0"),
    (6, "triggers.fix.prompt: `${{ event.issue.title }}`: 'issue' is not in the payload of push"),
    (7, "triggers.nightly: needs prompt or prompt-file"),
    (9, "triggers.nightly.on.schedule.0.cron: invalid cron expression '0 25 * * *'"),
    (10, "triggers.nightly: unknown key 'promt'"),
]


def test_every_problem_of_a_broken_trigger_file_is_recorded_one_a_line(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    commit_file(repo, ".dispatcher/triggers.yml", SEVERAL_PROBLEMS_YML, "break it five ways")
    shown = wait_for(
        lambda: (r := tdaemon.api.get(f"/repos/{name}").json())["triggers_error"] and r,
        "the trigger error",
    )
    recorded = shown["triggers_error"].splitlines()
    assert len(recorded) == len(SEVERAL_PROBLEMS), recorded
    for got, (line, message) in zip(recorded, SEVERAL_PROBLEMS, strict=True):
        assert got.startswith(f"{name}:.dispatcher/triggers.yml:{line}: {message}"), got
    (status,) = [t for t in tdaemon.api.get("/triggers").json() if t["repo"] == name]
    assert status["error"] == shown["triggers_error"]
    out = tdaemon.cli("repo", "show", name).stdout.splitlines()
    for line, _ in SEVERAL_PROBLEMS:  # each problem on a line of its own
        assert any(f"triggers.yml:{line}: " in row for row in out), out


def test_uncommitted_trigger_file_edits_do_not_count(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(PUSH_YML)
    (repo / ".dispatcher" / "triggers.yml").write_text("garbage: [\n")
    tdaemon.api.post("/events", json={"repo": name, "kind": "manual"})
    assert tdaemon.api.get(f"/repos/{name}").json()["triggers_error"] is None


# ------------------------------------------------------------------ issue inbox, POST /events, concurrency

ISSUE_YML = """\
version: 1
agents: {bot: BOT}
triggers:
  fix-issue:
    on: {issues: {types: [opened], labels: [agent]}}
    agent: bot
    prompt: "Fix issue #${{ event.issue.number }}: ${{ event.issue.title }}"
"""


def test_issue_inbox_makes_a_job_and_keeps_the_issue(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    _, name = add_trigger_repo(ISSUE_YML)
    hostile = "crash on `rm -rf /` $(id) ${{ event.issue.body }}"
    number = int(
        tdaemon.cli("issue", name, hostile, "--body", "details", "--label", "agent").stdout
    )
    assert number == 1
    job = tdaemon.wait(first_job(tdaemon, name, "the issue's job")["id"])
    # Event text is substituted once, never evaluated or re-expanded.
    assert prompt_of(job) == f"Fix issue #1: {hostile}"
    # An issue without the label makes no job.
    tdaemon.cli("issue", name, "just a question")
    issues = tdaemon.api.get(f"/repos/{name}/issues").json()
    assert [(i["number"], i["jobs"]) for i in issues] == [(2, []), (1, [job["id"]])]


def test_post_events_generic_and_dedup(tdaemon: Daemon, add_trigger_repo: AddRepo) -> None:
    yml = ISSUE_YML.replace(
        "{issues: {types: [opened], labels: [agent]}}", "{workflow_run: {conclusions: [failure]}}"
    )
    yml = yml.replace(
        "Fix issue #${{ event.issue.number }}: ${{ event.issue.title }}",
        "CI failed: ${{ event.workflow_run.name }}",
    )
    _, name = add_trigger_repo(yml)
    body = {
        "repo": name, "kind": "workflow_run", "action": "completed", "dedup_key": "ci-run-7",
        "conclusion": "failure", "payload": {"workflow_run": {"name": "nightly"}},
    }  # fmt: skip
    first = tdaemon.api.post("/events", json=body).json()
    assert first["matched"] == ["fix-issue"]
    assert len(first["jobs"]) == 1
    again = tdaemon.api.post("/events", json=body).json()
    assert again["duplicate"] is True
    assert again["jobs"] == first["jobs"]
    green = tdaemon.api.post(
        "/events", json={**body, "dedup_key": "ci-run-8", "conclusion": "success"}
    ).json()
    assert green["jobs"] == []
    job = tdaemon.wait(first["jobs"][0])
    assert prompt_of(job) == "CI failed: nightly"
    bad = tdaemon.api.post("/events", json={**body, "kind": "bogus"})
    assert bad.status_code == 422


def test_concurrency_group_cancels_the_older_job(
    tdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hold = agent(
        "hold.sh", f'cat > PROMPT.txt\nwhile [ ! -f "{tmp_path}/go" ]; do sleep 0.02; done\n'
    )
    yml = f"""\
version: 1
agents: {{hold: {hold}}}
triggers:
  one-at-a-time:
    on: {{issues: {{types: [opened]}}}}
    agent: hold
    concurrency: {{group: "fixer", cancel-in-progress: true}}
    prompt: "issue ${{{{ event.issue.number }}}}"
"""
    repo = init_repo(tmp_path / "conc", files={".dispatcher/triggers.yml": yml})
    name = tdaemon.add_repo(repo)
    tdaemon.cli("issue", name, "first")
    older = first_job(tdaemon, name, "the first job")
    tdaemon.wait(older["id"], {"running"})
    tdaemon.cli("issue", name, "second")
    assert tdaemon.wait(older["id"])["state"] == "canceled"
    newer = next(j for j in jobs_of(tdaemon, name) if j["id"] != older["id"])
    assert newer["concurrency_group"] == "fixer"
    (tmp_path / "go").touch()
    assert tdaemon.wait(newer["id"])["state"] == "succeeded"


# ------------------------------------------------------------------ forge webhooks

WEBHOOK_YML = """\
version: 1
agents: {bot: BOT}
triggers:
  gh-issue:
    on: {issues: {types: [opened]}}
    agent: bot
    prompt: "Issue ${{ event.issue.number }}: ${{ event.issue.title }} (by ${{ event.sender.login }})"
"""


def _sign(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _github(d: Daemon, body: bytes, *, event: str = "issues", delivery: str = "d-1",
            signature: str | None = None) -> httpx.Response:  # fmt: skip
    headers = {
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature if signature is not None else _sign(body),
        "Content-Type": "application/json",
    }  # fmt: skip
    return httpx.post(f"{d.url}/webhooks/github", content=body, headers=headers)


def test_github_webhook_signed_deduped_and_refused(
    tdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    repo = trigger_repo(tmp_path, agent, WEBHOOK_YML)
    name = "gh"  # deliveries are routed by the forge name given here:
    tdaemon.cli("repo", "add", str(repo), "--name", name, "--forge-name", "Codertocat/Hello-World")
    body = (FIXTURES / "github" / "issues.opened.json").read_bytes()
    payload = json.loads(body)
    # Bad signatures: 401 and nothing stored.
    for sig in ("", "sha256=" + "0" * 64, _sign(body, "wrong"), _sign(body + b" ")):
        resp = _github(tdaemon, body, signature=sig, delivery="bad")
        assert resp.status_code == 401, sig
        assert resp.json()["error"]["code"] == "unauthorized"
    assert tdaemon.api.get("/events").json() == []
    first = _github(tdaemon, body)
    assert first.status_code == 200, first.text
    assert len(first.json()["jobs"]) == 1
    second = _github(tdaemon, body)  # redelivery
    assert second.json()["duplicate"] is True
    assert len(jobs_of(tdaemon, name)) == 1
    job = tdaemon.wait(first.json()["jobs"][0])
    title = payload["issue"]["title"]
    assert prompt_of(job) == f"Issue {payload['issue']['number']}: {title} (by Codertocat)"
    # A kind we do not handle, validly signed: 202 and ignored.
    ping = _github(tdaemon, b'{"zen": "hi", "repository": {"full_name": "Codertocat/Hello-World"}}',
                   event="star", delivery="d-2")  # fmt: skip
    assert ping.status_code == 202
    # No token needed for webhooks, but the API still wants one.
    assert httpx.get(f"{tdaemon.url}/events").status_code == 401


ON_PUSH_YML = """\
version: 1
agents: {bot: BOT}
triggers:
  any-push:
    on: push
    agent: bot
    prompt: "pushed ${{ event.ref }}"
"""


def _gitea(d: Daemon, body: bytes, delivery: str) -> httpx.Response:
    sig = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery, "X-Gitea-Signature": sig,
               "Content-Type": "application/json"}  # fmt: skip
    return httpx.post(f"{d.url}/webhooks/github", content=body, headers=headers)


def _gitlab_push(d: Daemon, payload: dict[str, Any], delivery: str) -> httpx.Response:
    hook = "Tag Push Hook" if payload["ref"].startswith("refs/tags/") else "Push Hook"
    headers = {"X-Gitlab-Event": hook, "X-Gitlab-Event-UUID": delivery,
               "X-Gitlab-Token": GITLAB_TOKEN, "Content-Type": "application/json"}  # fmt: skip
    return httpx.post(f"{d.url}/webhooks/gitlab", content=json.dumps(payload), headers=headers)


def test_push_that_deletes_a_branch_or_tag_makes_no_job(
    tdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """GitHub, Gitea and GitLab deletions are stored as `push` `deleted` and fire no `on: push`
    (the local ref source makes nothing for a deleted branch); a normal push still does."""
    gh_repo = trigger_repo(tmp_path, agent, ON_PUSH_YML, name="gh")
    tdaemon.cli(
        "repo", "add", str(gh_repo), "--name", "gh", "--forge-name", "Codertocat/Hello-World"
    )
    gl_push = json.loads((FIXTURES / "gitlab" / "push.json").read_bytes())
    gl_repo = trigger_repo(tmp_path, agent, ON_PUSH_YML, name="gl")
    tdaemon.cli("repo", "add", str(gl_repo), "--name", "gl",
                "--forge-name", gl_push["project"]["path_with_namespace"])  # fmt: skip

    # GitHub's own example of a tag deletion, byte for byte; then a branch deletion.
    tag = (FIXTURES / "github" / "push.deleted-tag.json").read_bytes()
    pushed = json.loads((FIXTURES / "github" / "push.json").read_bytes())
    branch = {**pushed, "before": pushed["after"], "after": "0" * 40, "created": False,
              "deleted": True, "commits": [], "head_commit": None}  # fmt: skip
    gl_branch = {**gl_push, "before": gl_push["after"], "after": "0" * 40, "commits": [],
                 "total_commits_count": 0}  # fmt: skip
    deletions = [
        _github(tdaemon, tag, event="push", delivery="del-tag"),
        _github(tdaemon, json.dumps(branch).encode(), event="push", delivery="del-branch"),
        _gitea(tdaemon, json.dumps(branch).encode(), "gitea-del-branch"),
        _gitlab_push(tdaemon, gl_branch, "gl-del-branch"),
        _gitlab_push(tdaemon, {**gl_branch, "ref": "refs/tags/v1.0.0"}, "gl-del-tag"),
    ]
    for resp in deletions:
        assert resp.status_code == 200, resp.text
        assert (resp.json()["matched"], resp.json()["jobs"]) == ([], []), resp.text
        assert "on: push fires only for new commits" in " ".join(resp.json()["notes"])
    stored = tdaemon.api.get("/events").json()
    assert len(stored) == len(deletions)
    assert {(e["kind"], e["action"], e["jobs"] == []) for e in stored} == {
        ("push", "deleted", True)
    }
    assert jobs_of(tdaemon, "gh") == jobs_of(tdaemon, "gl") == []

    # Normal pushes, from both forges, still make their job.
    for resp in (
        _github(tdaemon, json.dumps(pushed).encode(), event="push", delivery="push-1"),
        _gitlab_push(tdaemon, gl_push, "gl-push-1"),
    ):
        assert resp.status_code == 200, resp.text
        assert resp.json()["matched"] == ["any-push"]
        (job_id,) = resp.json()["jobs"]
        assert tdaemon.wait(job_id)["state"] == "succeeded"
    assert len(jobs_of(tdaemon, "gh")) == len(jobs_of(tdaemon, "gl")) == 1


def test_gitlab_webhook_token(tdaemon: Daemon, tmp_path: Path, agent: Agent) -> None:
    repo = trigger_repo(tmp_path, agent, WEBHOOK_YML)
    body = (FIXTURES / "gitlab" / "issue.json").read_bytes()
    project = json.loads(body)["project"]["path_with_namespace"]
    name = "gl"
    tdaemon.cli("repo", "add", str(repo), "--name", name, "--forge-name", project)
    headers = {"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Event-UUID": "u-1",
               "Content-Type": "application/json"}  # fmt: skip
    bad = httpx.post(f"{tdaemon.url}/webhooks/gitlab", content=body,
                     headers={**headers, "X-Gitlab-Token": "nope"})  # fmt: skip
    assert bad.status_code == 401
    ok = httpx.post(f"{tdaemon.url}/webhooks/gitlab", content=body,
                    headers={**headers, "X-Gitlab-Token": GITLAB_TOKEN})  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["jobs"]) == 1
    job = tdaemon.wait(ok.json()["jobs"][0])
    assert prompt_of(job).startswith("Issue ")


def test_a_repo_added_without_a_forge_name_takes_its_origin_remotes(
    tdaemon: Daemon, tmp_path: Path
) -> None:
    """Read from the repo's config (GitPython) when the repo is added; no remote, none."""
    repo = init_repo(tmp_path / "hello")
    git(repo, "remote", "add", "origin", "git@github.com:Codertocat/Hello-World.git")
    name = tdaemon.add_repo(repo)
    assert tdaemon.api.get(f"/repos/{name}").json()["forge_name"] == "Codertocat/Hello-World"
    plain = tdaemon.add_repo(init_repo(tmp_path / "plain"))
    assert tdaemon.api.get(f"/repos/{plain}").json()["forge_name"] is None


def test_webhook_body_too_large_and_malformed(tdaemon: Daemon) -> None:
    big = b"{" + b" " * (11 * 1024 * 1024) + b"}"
    resp = httpx.post(f"{tdaemon.url}/webhooks/github", content=big,
                      headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": _sign(big)})  # fmt: skip
    assert resp.status_code == 413
    junk = b"not json"
    resp = _github(tdaemon, junk)
    assert resp.status_code == 422


# ------------------------------------------------------------------ file changes

FILES_YML = """\
version: 1
agents: {bot: BOT}
triggers:
  docs:
    on: {file_change: {paths: ["docs/**/*.md"], debounce-seconds: 0.2}}
    agent: bot
    prompt: "Docs changed: ${{ event.paths }}"
"""


def test_file_change_in_working_copy_makes_a_job(
    tdaemon: Daemon, add_trigger_repo: AddRepo
) -> None:
    repo, name = add_trigger_repo(FILES_YML)
    (repo / "src" / "other.py").write_text("x\n")  # does not match
    (repo / "docs" / "guide").mkdir(parents=True)
    (repo / "docs" / "guide" / "intro.md").write_text("# hi\n")
    job = tdaemon.wait(first_job(tdaemon, name, "a file_change job")["id"])
    assert job["trigger"] == "docs"
    assert "docs/guide/intro.md" in prompt_of(job)


# ------------------------------------------------------------------ CLI: check and schema


def test_triggers_check_and_schema_cli(daemon: Daemon, tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(PUSH_YML.replace("BOT", "/bin/true"))
    assert daemon.cli("triggers", "check", str(good)).returncode == 0
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "version: 1\ntriggers:\n  x:\n    on: {push: {}}\n    prompt: hi\n    agnet: claude\n"
    )
    result = daemon.cli("triggers", "check", str(bad), check=False)
    assert result.returncode == 1
    assert f"{bad}:6:" in result.stderr
    bad.write_text(SEVERAL_PROBLEMS_YML)
    result = daemon.cli("triggers", "check", str(bad), check=False)
    assert result.returncode == 1
    assert [row.split(": ", 2)[:2] for row in result.stderr.splitlines()] == [
        ["dispatcher", f"{bad}:{line}"] for line, _ in SEVERAL_PROBLEMS
    ], result.stderr
    bad.write_text("version: 1\ntriggers:\n  x:\n    on: [push\n    prompt: hi\n")
    result = daemon.cli("triggers", "check", str(bad), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"dispatcher: {bad}:4:9: YAML syntax error: '[' opened here is never closed; "
        "the parser gave up at 5:11: "
    ), result.stderr
    schema = json.loads(daemon.cli("triggers", "schema").stdout)
    assert "triggers" in schema["properties"]
    assert "max-parallel" in schema["properties"]
