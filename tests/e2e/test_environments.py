"""Agent environments and reporting, end to end: setup/cleanup, copy/link, ports,
conventions, structured agent output, follow-ups, budgets, the inbox.

The agents are the fake CLIs in tests/fakeagents (real processes printing the real
tools' output formats) or small shell scripts; the daemon is the real one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.agents.builtin.codex import PROFILE as CODEX
from tests.daemon_fixture import Daemon
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
FAKES = Path(__file__).resolve().parents[1] / "fakeagents"


def fake_daemon(daemon_factory: Callable[..., Daemon], **env: str) -> Daemon:
    """A daemon whose PATH finds the fake claude, codex, gemini, goose, qwen and opencode first.

    As root, what docs/agents/claude.md and codex.md tell a root user to do, without which
    a root daemon fails every claude and codex job at start: ``IS_SANDBOX=1`` (Claude
    Code's own opt-in), and codex with ``--sandbox danger-full-access``."""
    path = f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}"
    if os.geteuid() == 0:
        agents = json.loads(env.pop("DISPATCHER_AGENTS", "{}"))
        codex = ["danger-full-access" if a == "workspace-write" else a for a in CODEX.argv]
        env = {
            "IS_SANDBOX": "1",
            "DISPATCHER_AGENTS": json.dumps({"codex": codex, **agents}),
            **env,
        }
    return daemon_factory(PATH=path, DISPATCHER_MAX_PARALLEL="8", **env).start()


def repo_with(tmp_path: Path, triggers: str | None = None, **files: str) -> Path:
    content = {"README.md": "hello\n", "src/app.py": "print('hi')\n", **files}
    if triggers is not None:
        content[".dispatcher/triggers.yml"] = triggers
    return init_repo(tmp_path / "r", files=content)


def log_of(d: Daemon, job_id: int) -> str:
    return str(d.api.get(f"/jobs/{job_id}/log").text)


TRIGGERS = """\
version: 1
setup: {setup}
cleanup: echo cleaned > "$CLEANUP_MARK"
copy: [.env, config/local.json]
link: [node_modules]
triggers:
  manual:
    on: manual
    prompt: hi
"""


# ------------------------------------------------------------------ setup, copy, link, cleanup


def test_setup_copy_link_and_cleanup_prepare_and_end_a_worktree(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    mark = tmp_path / "cleanup-mark"
    d = fake_daemon(daemon_factory, CLEANUP_MARK=str(mark))
    repo = repo_with(
        tmp_path,
        TRIGGERS.format(setup="echo setting up; echo built > built.txt"),
        **{".gitignore": "built.txt\n"},
    )
    # Untracked files in the user's checkout that agents need.
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "config").mkdir()
    (repo / "config" / "local.json").write_text("{}\n")
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    (repo / "node_modules" / "pkg" / "index.js").write_text("dep\n")
    name = d.add_repo(repo)
    report = tmp_path / "seen"
    script = agent(
        "look.sh",
        f'cat .env built.txt > "{report}"; readlink node_modules >> "{report}";'
        ' echo "$DISPATCHER_PORT" >> "' + str(report) + '"; echo work > work.txt\n',
    )
    job = d.wait(d.submit(name, "go", command=[script])["id"])
    assert job["state"] == "succeeded", job["error"]
    seen = report.read_text().splitlines()
    assert seen[:2] == ["SECRET=1", "built"]  # copied before setup; setup ran before the agent
    assert seen[2] == str((repo / "node_modules").resolve())  # a symlink to the checkout's
    assert int(seen[3]) == job["port"]
    log = log_of(d, job["id"])
    assert log.index("setup: echo setting up") < log.index("setting up\n") < log.index("agent ")
    # Only the agent's own file is committed: never the copied .env, config or the link.
    changed = git(repo, "diff", "--name-only", f"{job['base']}..{job['branch']}").split()
    assert changed == ["work.txt"]
    assert job["workspace"]["copy_paths"] == [".env", "config/local.json"]
    # Discard runs cleanup in the worktree before removing it.
    d.cli("discard", str(job["id"]))
    assert mark.read_text() == "cleaned\n"
    assert (repo / "node_modules" / "pkg" / "index.js").read_text() == "dep\n"  # link target kept


@pytest.mark.parametrize(
    ("setup", "timeout_minutes", "reason"),
    [
        # A minute for the failing setup: a loaded machine may take over a second to
        # start it, which must not turn its exit 3 into a timeout.
        ("exit 3", "1", "setup failed with exit 3"),
        ("sleep 30", "0.02", "setup timed out after 1.2s"),
    ],
)
def test_failing_setup_fails_the_job_at_preparing_and_leaves_nothing(
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
    setup: str,
    timeout_minutes: str,
    reason: str,
) -> None:
    d = fake_daemon(daemon_factory)
    triggers = TRIGGERS.format(setup=setup).replace(
        "cleanup:", f"setup-timeout-minutes: {timeout_minutes}\ncleanup:"
    )
    repo = repo_with(tmp_path, triggers)
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, "go", command=["true"])["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith(reason), job["error"]
    assert job["started_at"] is None  # the agent never started
    assert job["worktree"] is None
    assert not list((d.state_dir / "worktrees" / name).glob("*"))
    assert not git(repo, "branch", "--list", job["branch"])


def test_a_job_canceled_during_setup_keeps_its_worktree_recorded_and_discard_removes_it(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The worktree the prepare made is on the job's row when a cancel ends it before the
    agent starts: discard then removes it and its branch (a canceled row without it left
    the tree and the branch behind, and discard refused the branch as checked out)."""
    gate = tmp_path / "gate"
    d = fake_daemon(daemon_factory, DISPATCHER_SANDBOX="off")
    setup = f'echo in setup; while [ ! -f "{gate}" ]; do sleep 0.05; done'
    name = d.add_repo(repo_with(tmp_path, TRIGGERS.format(setup=f"'{setup}'")))
    job_id = d.submit(name, "go", command=["true"])["id"]
    wait_until(lambda: "in setup" in log_of(d, job_id), "the setup to run")
    assert d.api.post(f"/jobs/{job_id}/cancel").status_code in (200, 202)
    gate.touch()
    job = d.wait(job_id)
    assert job["state"] == "canceled", job["error"]
    assert job["started_at"] is None  # the agent never started
    assert job["worktree"] and Path(job["worktree"]).is_dir(), job
    d.cli("discard", str(job_id))
    assert not Path(job["worktree"]).exists()
    assert not git(tmp_path / "r", "branch", "--list", job["branch"])


def test_copy_and_link_refuse_paths_that_leave_the_repo(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no\n")
    repo = repo_with(tmp_path, TRIGGERS.format(setup="echo ok"))
    (repo / ".env").symlink_to(outside / "secret")  # .env leads outside the repo
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, "go", command=["true"])["id"])
    assert job["state"] == "failed"
    assert "'.env' leads outside the repository" in job["error"]
    assert job["worktree"] is None and not git(repo, "branch", "--list", job["branch"])


def test_concurrent_jobs_get_distinct_free_ports(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = fake_daemon(
        daemon_factory, DISPATCHER_JOB_PORT_BASE="31000", DISPATCHER_JOB_PORTS="5",
        DISPATCHER_MAX_PARALLEL_PER_REPO="4",
    )  # fmt: skip
    busy = socket.socket()
    busy.bind(("127.0.0.1", 31000))  # the first block is taken by someone else
    busy.listen()
    try:
        repo = repo_with(tmp_path)
        name = d.add_repo(repo)
        gate = tmp_path / "gate"
        out = tmp_path / "ports"
        out.mkdir()
        script = agent(
            "port.sh",
            f'echo "$DISPATCHER_PORT $DISPATCHER_PORTS $PORT" > "{out}/$DISPATCHER_JOB_ID"\n'
            f'while [ ! -e "{gate}" ]; do sleep 0.05; done\n',
        )
        ids = [d.submit(name, f"p{i}", command=[script])["id"] for i in range(4)]
        for job_id in ids:
            d.wait(job_id, {"running"})
        seen = {}
        for job_id in ids:
            path = out / str(job_id)
            wait_until(lambda p=path: p.exists() and p.read_text(), f"job {job_id}'s ports", 20)
            first, span, plain = path.read_text().split()
            assert span == f"{first}-{int(first) + 4}" and plain == first
            seen[job_id] = int(first)
        assert len(set(seen.values())) == 4
        assert 31000 not in seen.values()  # skipped: something listens there
        assert all((p - 31000) % 5 == 0 for p in seen.values())
        gate.touch()
        for job_id in ids:
            assert d.wait(job_id)["state"] == "succeeded"
        # Released when the jobs end: the next job gets the lowest free block again.
        again = d.wait(d.submit(name, "again", command=["true"])["id"])
        assert again["port"] == min(seen.values())
    finally:
        busy.close()


def test_the_agent_gets_pwd_naming_its_worktree(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Not the daemon's own $PWD (the spawn wrapper's sh sets it to the worktree): CLIs on
    Bun (opencode) work in $PWD when it is set, before their real cwd, so the daemon's
    would send them into another directory."""
    d = fake_daemon(daemon_factory, PWD=str(tmp_path))
    name = d.add_repo(repo_with(tmp_path))
    reader = ["python3", "-c", "import os; open('pwd.txt', 'w').write(os.environ['PWD'])"]
    job = d.wait(d.submit(name, "where am I", command=reader)["id"])
    assert job["state"] == "succeeded", job
    assert (Path(job["worktree"]) / "pwd.txt").read_text() == job["worktree"]


# ------------------------------------------------------------------ conventions


SKILLS = {
    "AGENTS.md": "Always run the linter.\n",
    ".dispatcher/skills/migrations.md": "---\ndescription: How we write migrations\n---\n"
    "Use alembic revision --autogenerate.\n",
    ".dispatcher/skills/release.md": "# Cutting a release\n\nTag it.\n",
}


def test_conventions_reach_a_configured_agent_in_the_prompt_file(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    got = tmp_path / "prompt"
    script = agent("read.sh", f'cat > "{got}"\n')
    d = fake_daemon(daemon_factory, DISPATCHER_AGENTS=json.dumps({"reader": [script]}))
    repo = repo_with(tmp_path, **SKILLS)
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, "fix the bug", agent="reader", skills=["migrations"])["id"])
    assert job["state"] == "succeeded", job["error"]
    text = got.read_text()
    assert "Always run the linter." in text
    assert "- migrations: How we write migrations (file: .dispatcher/skills/migrations.md)" in text
    assert "- release: Cutting a release" in text
    assert "Use alembic revision --autogenerate." in text  # selected: in full
    assert "Tag it." not in text  # not selected: only in the index
    assert text.endswith("# Your task\n\nfix the bug")
    resp = d.api.post("/jobs", json={"repo": name, "prompt": "x", "skills": ["nope"]})
    assert resp.status_code == 422
    assert "unknown skill 'nope'" in resp.json()["error"]["message"]
    assert "migrations, release" in resp.json()["error"]["message"]
    # A one-off command gets its prompt verbatim: it may not be a model at all.
    plain = d.wait(d.submit(name, "exactly this", command=[script])["id"])
    assert plain["state"] == "succeeded"
    assert got.read_text() == "exactly this"


def test_claude_gets_conventions_as_system_prompt_and_codex_reads_agents_md_itself(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory)
    repo = repo_with(tmp_path, **SKILLS)
    name = d.add_repo(repo)
    claude = d.wait(d.submit(name, "task one", agent="claude", max_cost_usd=5)["id"])
    assert claude["state"] == "succeeded", claude["error"]
    args = json.loads((Path(claude["worktree"]) / "AGENT_ARGS.json").read_text())
    argv = args["argv"] if isinstance(args, dict) else args
    system = argv[argv.index("--append-system-prompt") + 1]
    assert "Always run the linter." in system and "- release:" in system
    assert argv[argv.index("--max-budget-usd") + 1] == "5"
    codex = d.wait(d.submit(name, "task two", agent="codex")["id"])
    assert codex["state"] == "succeeded", codex["error"]
    notes = (Path(codex["worktree"]) / "AGENT_NOTES.md").read_text()
    assert "Always run the linter." not in notes  # codex reads AGENTS.md on its own
    assert "- migrations:" in notes  # the skills index still comes in the prompt


# ------------------------------------------------------------------ structured output


@pytest.mark.parametrize("agent_name", ["claude", "codex", "gemini", "goose", "qwen", "opencode"])
def test_agent_reports_are_stored_and_shown(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent_name: str
) -> None:
    d = fake_daemon(
        daemon_factory, FAKE_AGENT_SUMMARY="Renamed the helper.", FAKE_AGENT_GARBAGE="1"
    )
    repo = repo_with(tmp_path)
    name = d.add_repo(repo)
    job = d.wait(d.submit(name, "rename it", agent=agent_name)["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["summary"] == "Renamed the helper."
    assert job["session_id"]
    if agent_name == "claude":
        assert job["cost_usd"] == pytest.approx(0.0123)
        assert job["turns"] and job["input_tokens"] and job["output_tokens"]
    shown = d.cli("show", str(job["id"])).stdout
    assert "summary        Renamed the helper." in shown
    changed = git(Path(job["worktree"]), "diff", "--name-only", f"{job['base']}..HEAD").split()
    assert changed == ["AGENT_ARGS.json", "AGENT_NOTES.md"]  # committed by the daemon


@pytest.mark.parametrize("agent_name", ["codex", "gemini", "goose"])
def test_session_id_printed_at_the_start_survives_the_log_rotation(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent_name: str
) -> None:
    # Codex, Gemini and goose print their session id once, first; the agent below keeps
    # talking until the daemon's log cap has rotated that line out of agent.log.
    d = fake_daemon(
        daemon_factory, FAKE_AGENT_UNTIL_ROTATED="60000", DISPATCHER_MAX_LOG_BYTES="20000",
    )  # fmt: skip
    name = d.add_repo(repo_with(tmp_path))
    job = d.wait(d.submit(name, "long one", agent=agent_name)["id"])
    assert job["state"] == "succeeded", job["error"]
    log = (d.state_dir / "jobs" / str(job["id"]) / "agent.log").read_text()
    assert "log rotated" in log
    assert '"thread.started"' not in log and '"init"' not in log  # rotated out
    assert "goose is ready" not in log
    args = json.loads((Path(job["worktree"]) / "AGENT_ARGS.json").read_text())
    assert job["session_id"] == args["session"]  # the id the agent printed first
    if agent_name in ("codex", "gemini", "goose"):  # and a follow-up resumes it
        resp = d.api.post(f"/jobs/{job['id']}/followup", json={"prompt": "more"})
        assert resp.status_code == 201, resp.text
        follow = d.wait(resp.json()["job"]["id"])
        assert follow["state"] == "succeeded", follow["error"]
        notes = (Path(job["worktree"]) / "AGENT_NOTES.md").read_text()
        assert f"resumed {job['session_id']}" in notes


@pytest.mark.parametrize("agent_name", ["claude", "codex"])
def test_an_agent_reporting_an_error_fails_the_job(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent_name: str
) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_ERROR="1")
    name = d.add_repo(repo_with(tmp_path))
    job = d.wait(d.submit(name, "try", agent=agent_name)["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("the agent reported an error: ")
    if agent_name == "claude":
        assert job["exit_code"] == 0  # is_error with exit 0 still fails


# ------------------------------------------------------------------ follow-ups


def test_followup_resumes_the_session_in_the_same_worktree_and_branch(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory)
    name = d.add_repo(repo_with(tmp_path))
    first = d.wait(d.submit(name, "write the feature", agent="claude")["id"])
    assert first["state"] == "succeeded", first["error"]
    out = d.cli("followup", str(first["id"]), "also add tests", "--wait").stdout
    second = d.job(int(out.strip()))
    assert second["state"] == "succeeded", second["error"]
    assert (second["followup_of"], second["branch"]) == (first["id"], first["branch"])
    assert second["worktree"] == first["worktree"]
    assert second["session_id"] == first["session_id"]  # resumed, not a new session
    notes = (Path(second["worktree"]) / "AGENT_NOTES.md").read_text()
    assert "write the feature" in notes and "also add tests" in notes
    assert f"resumed {first['session_id']}" in notes
    assert f"resuming agent session {first['session_id']}" in log_of(d, second["id"])
    assert second["commits_ahead"] == 2 and second["base"] == first["base"]
    parent = d.job(first["id"])
    assert (parent["followed_by"], parent["worktree"]) == (second["id"], None)
    runs = d.api.get(f"/jobs/{first['id']}/runs").json()
    assert [r["id"] for r in runs] == [first["id"], second["id"]]
    # The parent no longer owns the worktree: acting on it is refused with a pointer.
    for action in ("discard", "merge", "retry", "followup"):
        body = {"prompt": "again"} if action == "followup" else None
        resp = d.api.post(f"/jobs/{first['id']}/{action}", json=body)
        assert resp.status_code == 409, (action, resp.text)
        assert f"job {second['id']}" in resp.json()["error"]["message"]
    # A running or unknown job cannot be followed up.
    assert d.api.post("/jobs/999999/followup", json={"prompt": "x"}).status_code == 404


def test_followup_of_an_agent_without_resume_runs_fresh_in_the_same_worktree(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent("note.sh", "cat >> NOTES.md\n")
    first = daemon.wait(daemon.submit(name, "one", command=[script])["id"])
    second = daemon.api.post(f"/jobs/{first['id']}/followup", json={"prompt": "two"})
    assert second.status_code == 201, second.text
    done = daemon.wait(second.json()["job"]["id"])
    assert done["state"] == "succeeded"
    assert (Path(done["worktree"]) / "NOTES.md").read_text() == "onetwo"
    assert "no session was recorded" in daemon.api.get(f"/jobs/{done['id']}/log").text


# ------------------------------------------------------------------ budgets and the inbox


def test_job_budget_and_daily_cap(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_COST="0.75")
    repo = repo_with(tmp_path)
    resp = d.api.post("/repos", json={"path": str(repo), "name": "capped", "daily_cost_usd": 1.0})
    assert resp.status_code == 201, resp.text
    over = d.wait(d.submit("capped", "spend", agent="claude", max_cost_usd=0.5)["id"])
    assert over["state"] == "failed"
    assert "over the job's budget of $0.5000" in over["error"]
    assert over["commits_ahead"] == 1  # the work is kept
    within = d.wait(d.submit("capped", "spend more", agent="claude")["id"])
    assert within["state"] == "succeeded"
    assert d.api.get("/repos/capped").json()["cost_today_usd"] == pytest.approx(1.5)
    refused = d.api.post("/jobs", json={"repo": "capped", "prompt": "more", "agent": "claude"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "spent $1.50 of its $1.00 daily budget" in refused.json()["error"]["message"]


def test_inbox_lists_jobs_awaiting_review_newest_first(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_SUMMARY="Did the thing.")
    name = d.add_repo(repo_with(tmp_path))
    a = d.wait(d.submit(name, "first", agent="claude")["id"])
    b = d.wait(d.submit(name, "second", agent="claude")["id"])
    nothing = d.wait(d.submit(name, "no change", command=["true"])["id"])
    merged = d.wait(d.submit(name, "merged", agent="claude")["id"])
    d.cli("merge", str(merged["id"]))
    ids = [j["id"] for j in d.api.get("/inbox").json()]
    assert ids == [b["id"], a["id"]]
    assert nothing["id"] not in ids
    out = d.cli("inbox").stdout
    assert out.index(f"{b['id']:>5}") < out.index(f"{a['id']:>5}")
    assert "summary: Did the thing." in out


# ------------------------------------------------------------------ notifications


class _Receiver:
    """A real HTTP server on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []  # type: list[tuple[str, dict[str, str], bytes]]
        self.status: dict[str, int] = {}  # what it answers, per path (else 204)

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, dict(self.headers.items()), body))
                self.send_response(outer.status.get(self.path, 204))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 20) -> None:
        wait_until(
            lambda: len(self.received) >= count,
            lambda: f"{count} requests, having got {self.received}",
            timeout,
            interval=0.1,
        )


def test_notifications_still_owed_at_a_stop_are_sent_by_the_next_daemon(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    receiver = _Receiver()
    try:
        targets = json.dumps([
            {"type": "webhook", "url": f"{receiver.url}/hook", "on": ["succeeded"]},
            {"type": "ntfy", "url": f"{receiver.url}/ntfy", "on": ["succeeded"]},
        ])  # fmt: skip
        d = fake_daemon(daemon_factory, DISPATCHER_NOTIFY=targets, DISPATCHER_NOTIFY_ATTEMPTS="20")
        name = d.add_repo(repo_with(tmp_path))
        receiver.status["/hook"] = 503  # down: retried with backoff until the stop
        job = d.wait(d.submit(name, "x", command=["true"])["id"])
        assert job["state"] == "succeeded"
        receiver.wait(2)  # ntfy delivered, the hook refused once
        d.stop(signal.SIGTERM)
        sent = list(receiver.received)
        hook_ids = {h["webhook-id"] for p, h, _ in sent if p == "/hook"}
        assert hook_ids and sum(p == "/ntfy" for p, _, _ in sent) == 1
        receiver.status["/hook"] = 204
        d.start()  # it still owes the hook its notification, not ntfy
        rec = wait_until(
            lambda: len(r := d.api.get(f"/jobs/{job['id']}/deliveries").json()) >= 2 and r,
            "two deliveries recorded",
            timeout=20,
            interval=0.05,
        )
        later = receiver.received[len(sent) :]
        assert [p for p, _, _ in later] == ["/hook"], later
        assert later[0][1]["webhook-id"] in hook_ids  # the same message: receivers dedupe
        assert sorted((r["target"], r["ok"]) for r in rec) == [("ntfy", True), ("webhook", True)]
        d.stop(signal.SIGTERM)
        d.start()  # nothing is owed any more (the resume runs before the API answers)
        assert d.log_path.read_text().count("notifications still owed") == 1
        assert len(receiver.received) == len(sent) + 1
    finally:
        receiver.close()


def _verify_standard_webhook(key: bytes, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec (not the daemon's code)."""
    import base64
    import hashlib
    import hmac

    lower = {k.lower(): v for k, v in headers.items()}
    signed = f"{lower['webhook-id']}.{lower['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig.split(",", 1)[1] == expected for sig in lower["webhook-signature"].split())


def test_finished_jobs_are_announced_signed_and_recorded(
    daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    import base64

    key = bytes(range(32))
    receiver = _Receiver()
    try:
        global_targets = json.dumps(
            [{"type": "webhook", "url": f"{receiver.url}/global", "on": ["failed"]}]
        )
        d = fake_daemon(
            daemon_factory, DISPATCHER_NOTIFY=global_targets,
            HOOK_SECRET="whsec_" + base64.b64encode(key).decode(),
        )  # fmt: skip
        triggers = (
            "version: 1\nnotify:\n"
            f"  - {{type: webhook, url: '{receiver.url}/repo', secret: 'env:HOOK_SECRET',"
            " on: [succeeded, merged]}\n"
            "triggers:\n  manual:\n    on: manual\n    prompt: hi\n"
        )
        name = d.add_repo(repo_with(tmp_path, triggers))
        script = agent("w.sh", "echo x > x.txt\n")
        ok = d.wait(d.submit(name, "make x", command=[script])["id"])
        assert ok["state"] == "succeeded"
        bad = d.wait(d.submit(name, "fail", command=["false"])["id"])
        assert bad["state"] == "failed"
        d.cli("merge", str(ok["id"]))
        receiver.wait(3)
        by_path: dict[str, list[dict[str, Any]]] = {}
        for path, headers, body in receiver.received:
            payload = json.loads(body)
            by_path.setdefault(path, []).append(payload)
            if path == "/repo":
                assert _verify_standard_webhook(key, headers, body)
                assert not _verify_standard_webhook(key, headers, body + b" ")
        assert sorted(p["type"] for p in by_path["/repo"]) == ["job.merged", "job.succeeded"]
        assert [p["type"] for p in by_path["/global"]] == ["job.failed"]
        # Outcomes are recorded per job.
        wait_until(
            lambda: d.api.get(f"/jobs/{bad['id']}/deliveries").json(),
            "the delivery to be recorded",
            timeout=20,
            interval=0.05,
        )
        rec = d.api.get(f"/jobs/{bad['id']}/deliveries").json()
        assert [(r["target"], r["state"], r["ok"], r["status_code"]) for r in rec] == [
            ("webhook", "failed", True, 204)
        ]
        shown = d.cli("show", str(bad["id"])).stdout
        assert f"notified       webhook {receiver.url}/global on failed: ok (204)" in shown
    finally:
        receiver.close()


def test_codex_final_message_file_is_the_summary(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory, FAKE_CODEX_LAST_MESSAGE="From the -o file.")
    name = d.add_repo(repo_with(tmp_path))
    job = d.wait(d.submit(name, "do it", agent="codex")["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["summary"] == "From the -o file."  # preferred over the event stream's
    args = json.loads((Path(job["worktree"]) / "AGENT_ARGS.json").read_text())
    argv = args["argv"] if isinstance(args, dict) else args
    assert argv[argv.index("-o") + 1] == str(d.state_dir / "jobs" / str(job["id"]) / "summary.md")
