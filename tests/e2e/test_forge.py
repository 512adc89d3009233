"""End to end: push and pull requests through the real daemon (docs/forge.md).

Every push goes to a local bare repository with real git: a plain path remote, or
the fake forge's smart HTTP (``git http-backend``) behind HTTP Basic with the token.
The forges' REST APIs are tests/forgefake.py on 127.0.0.1, named to the daemon by
``DISPATCHER_FORGES`` (hosts github.test, gitlab.test, gitea.test).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixture import Daemon, _new_daemon, hold_fault, release_fault
from tests.forgefake import FakeForge
from tests.gitutil import commit_file, git, git_counter, init_repo
from tests.waiting import wait_until

TOKEN = "tok-SECRET-4f1c9a7e"  # what must never show up anywhere
WRITE = 'printf "%s\\n" "$(cat)" > CHANGE.md\necho "agent did it"\n'


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeForge]:
    fake = FakeForge(tmp_path_factory.mktemp("forge"), TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def fdaemon(tmp_path_factory: pytest.TempPathFactory, forge: FakeForge) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("fdaemon")
    bin_dir, _ = git_counter(root)
    forges = {
        "github.test": {"kind": "github", "api": f"{forge.url}/gh"},
        "gitlab.test": {"kind": "gitlab", "api": f"{forge.url}/api/v4"},
        "gitea.test": {"kind": "forgejo", "api": f"{forge.url}/api/v1"},
        "badtoken.test": {"kind": "github", "api": f"{forge.url}/gh"},
        "notoken.test": {"kind": "gitea", "api": f"{forge.url}/api/v1"},
    }
    tokens = {h: TOKEN for h in ("github.test", "gitlab.test", "gitea.test", "127.0.0.1")}
    tokens["badtoken.test"] = "wrong-token"
    d = _new_daemon(
        root,
        DISPATCHER_FORGES=json.dumps(forges),
        DISPATCHER_FORGE_TOKENS=json.dumps(tokens),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    d.serve_args = ("--log-format", "json")  # the JSON formatter's path, checked for tokens
    d.start()
    yield d
    try:
        d.cancel_active()
    finally:
        d.stop()


def finished_job(
    d: Daemon, repo: Path, agent: Any, prompt: str = "Add a change note"
) -> dict[str, Any]:
    name = d.add_repo(repo)
    job = d.submit(name, prompt, command=[agent("write.sh", WRITE)])
    done = d.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded" and done["commits_ahead"] == 1, done
    return done


def forge_repo(tmp_path: Path, forge: FakeForge, host: str, repo: str) -> Path:
    """A checkout whose origin is https://HOST/REPO.git, pushed to the fake's smart HTTP."""
    path = init_repo(tmp_path / "app")
    forge.bare(repo)
    git(path, "remote", "add", "origin", f"https://{host}/{repo}.git")
    git(path, "config", "remote.origin.pushurl", f"{forge.url}/{repo}.git")
    return path


def local_state(repo: Path) -> tuple[str, str]:
    return git(repo, "for-each-ref"), (repo / ".git" / "config").read_text()


def secrets_absent(d: Daemon, job_id: int) -> None:
    log = (d.state_dir / "jobs" / str(job_id) / "agent.log").read_text()
    assert TOKEN not in log
    assert TOKEN not in d.log_path.read_text()
    argv_log = d.log_path.parent / "git.log"
    assert argv_log.read_text() and TOKEN not in argv_log.read_text()
    assert TOKEN not in json.dumps(d.job(job_id))


# ------------------------------------------------------------------ push


def test_push_over_https_uses_the_token_and_shows_it_nowhere(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    repo = forge_repo(tmp_path, forge, "gitea.test", "team/push-me")
    job = finished_job(fdaemon, repo, agent)
    out = fdaemon.cli("push", str(job["id"]))
    assert f"pushed {job['branch']}" in out.stdout
    bare = forge.root / "team/push-me.git"
    assert git(bare, "rev-parse", job["branch"]) == job["head"]
    shown = fdaemon.job(job["id"])
    assert (shown["pushed_remote"], shown["pushed_sha"]) == ("origin", job["head"])
    assert shown["forge_error"] is None
    # git asked once without credentials (401), then sent them from our helper.
    assert any(a.startswith("Basic ") for a in forge.git_auth)
    secrets_absent(fdaemon, job["id"])
    # The token reached no agent: a job printing its environment shows none of it.
    name = fdaemon.add_repo(init_repo(tmp_path / "envdump"))
    dump = fdaemon.wait(fdaemon.submit(name, "env", command=["sh", "-c", "env > ENV.txt"])["id"])
    env_text = (Path(dump["worktree"]) / "ENV.txt").read_text()
    assert TOKEN not in env_text and "FORGE" not in env_text


def test_push_refused_non_fast_forward_then_stale_lease_changes_nothing_local(
    fdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    job = finished_job(fdaemon, repo, agent)
    jid = job["id"]
    assert fdaemon.api.post(f"/jobs/{jid}/push").status_code == 200
    # Someone else adds a commit to the branch on the remote.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", "-b", job["branch"], str(bare), str(other))
    commit_file(other, "THEIRS.md", "theirs\n")
    git(other, "push", "-q", "origin", job["branch"])
    theirs = git(bare, "rev-parse", job["branch"])
    commit_file(repo, "MINE.md", "mine\n")  # a local commit on main: the branch itself stays
    before = local_state(repo)

    refused = fdaemon.cli("push", str(jid), check=False)
    assert refused.returncode != 0
    line = refused.stderr.strip()
    assert "\n" not in line and "non-fast-forward" in line and "--force-with-lease" in line
    assert local_state(repo) == before
    assert git(bare, "rev-parse", job["branch"]) == theirs
    shown = fdaemon.job(jid)
    assert "non-fast-forward" in shown["forge_error"]
    assert "push failed" in (fdaemon.state_dir / "jobs" / str(jid) / "agent.log").read_text()

    # The lease is where this job last pushed: the remote moved since, so no overwrite.
    resp = fdaemon.api.post(f"/jobs/{jid}/push", json={"force_with_lease": True})
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "push_rejected"
    assert "lease" in resp.json()["error"]["message"]
    assert local_state(repo) == before
    assert git(bare, "rev-parse", job["branch"]) == theirs

    # Back where we pushed it: the lease holds and the push (forced) works.
    git(bare, "update-ref", f"refs/heads/{job['branch']}", job["head"])
    git(other, "commit", "-q", "--amend", "-m", "rewritten")
    resp = fdaemon.api.post(f"/jobs/{jid}/push", json={"force_with_lease": True})
    assert resp.status_code == 200, resp.text
    assert fdaemon.job(jid)["forge_error"] is None


def test_push_refused_by_a_pre_receive_hook_changes_nothing_local(
    fdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'GL-HOOK-ERR: branch dispatcher/* is protected'\nexit 1\n")
    hook.chmod(0o755)
    git(repo, "remote", "add", "origin", str(bare))
    job = finished_job(fdaemon, repo, agent)
    before = local_state(repo)
    resp = fdaemon.api.post(f"/jobs/{job['id']}/push")
    assert resp.status_code == 409, resp.text
    message = resp.json()["error"]["message"]
    assert "hook declined" in message and "is protected" in message and "\n" not in message
    assert local_state(repo) == before
    assert git(bare, "for-each-ref") == ""
    assert fdaemon.job(job["id"])["pushed_sha"] is None


def test_push_to_an_unknown_remote_is_one_line(fdaemon: Daemon, tmp_path: Path, agent: Any) -> None:
    job = finished_job(fdaemon, init_repo(tmp_path / "app"), agent)
    out = fdaemon.cli("push", str(job["id"]), "--remote", "upstream", check=False)
    assert out.returncode != 0
    assert "no remote 'upstream'" in out.stderr and out.stderr.count("\n") == 1
    bad = fdaemon.api.post(f"/jobs/{job['id']}/push", json={"remote": "--upload-pack=x"})
    assert bad.status_code == 422
    for base in ("--upload-pack=x", "main..x", "a b", "x:y"):
        bad = fdaemon.api.post(f"/jobs/{job['id']}/pr", json={"base": base})
        assert bad.status_code == 422, (base, bad.text)
    # A job without commits has nothing to push.
    name = fdaemon.add_repo(init_repo(tmp_path / "idle"))
    idle = fdaemon.wait(fdaemon.submit(name, "nothing", command=["true"])["id"])
    resp = fdaemon.api.post(f"/jobs/{idle['id']}/push")
    assert resp.status_code == 409 and "no commits to push" in resp.json()["error"]["message"]


# ------------------------------------------------------------------ pull requests

KINDS = {
    "github": ("github.test", "Authorization", f"Bearer {TOKEN}", "/gh/repos/team/{n}/pulls"),
    "gitlab": ("gitlab.test", "PRIVATE-TOKEN", TOKEN, "/api/v4/projects/team%2F{n}/merge_requests"),
    "gitea": ("gitea.test", "Authorization", f"token {TOKEN}", "/api/v1/repos/team/{n}/pulls"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_pr_opens_one_on_each_forge_and_repeating_returns_it(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any, kind: str
) -> None:
    host, header, value, create_path = KINDS[kind]
    name = f"pr-{kind}"
    repo = forge_repo(tmp_path, forge, host, f"team/{name}")
    job = finished_job(fdaemon, repo, agent, prompt="Add a change note\n\nWith details.")
    jid = job["id"]
    out = fdaemon.cli("pr", str(jid), "--draft", "--label", "agent", "--label", "bot")
    url = out.stdout.strip()
    shown = fdaemon.job(jid)
    assert shown["pr_url"] == url and shown["pr_number"] == 1 and shown["pr_state"] == "draft"
    assert shown["pushed_sha"] == job["head"]  # pushed first
    assert git(forge.root / f"team/{name}.git", "rev-parse", job["branch"]) == job["head"]
    creates = [
        s
        for s in forge.requests(kind)
        if s.method == "POST" and s.path == create_path.format(n=name)
    ]
    assert len(creates) == 1
    sent = creates[0]
    assert sent.headers[header] == value
    pull = forge.pulls[(kind, f"team/{name}")][0]
    assert pull.head == job["branch"] and pull.base == "main"
    assert pull.title.endswith("Add a change note")
    assert pull.draft and sorted(pull.labels) == ["agent", "bot"]
    assert "> With details." in pull.body and "CHANGE.md" in pull.body  # prompt, diffstat
    assert f"job {jid}" in pull.body

    again = fdaemon.api.post(f"/jobs/{jid}/pr")
    assert again.status_code == 200 and again.json()["changed"] is False
    assert again.json()["job"]["pr_url"] == url
    assert (
        len(
            [
                s
                for s in forge.requests(kind)
                if s.method == "POST"
                and "labels" not in s.path
                and s.path == create_path.format(n=name)
            ]
        )
        == 1
    )
    # A follow-up continues the branch: the same PR, its new commits pushed to it.
    follow = fdaemon.api.post(f"/jobs/{jid}/followup", json={"prompt": "More notes"})
    assert follow.status_code == 201, follow.text
    later = fdaemon.wait(follow.json()["job"]["id"])
    assert later["state"] == "succeeded" and later["pr_url"] == url
    resp = fdaemon.api.post(f"/jobs/{later['id']}/pr")
    assert resp.status_code == 200 and resp.json()["changed"] is True, resp.text
    assert "new commits pushed" in resp.json()["message"]
    assert git(forge.root / f"team/{name}.git", "rev-parse", job["branch"]) == later["head"]
    assert len(forge.pulls[(kind, f"team/{name}")]) == 1
    listed = fdaemon.cli("jobs", "--repo", shown["repo"]).stdout
    assert "#1" in listed
    assert f"pr_url         {url}" in fdaemon.cli("show", str(jid)).stdout
    with httpx.Client(base_url=fdaemon.url, timeout=30) as ui:  # the dashboard's job page
        assert ui.post("/ui/login", data={"token": fdaemon.token}).status_code == 303
        html = ui.get(f"/ui/jobs/{jid}").text
    assert f'href="{url}"' in html and "pull request #1" in html
    secrets_absent(fdaemon, jid)


def test_the_dashboards_push_and_pull_request_buttons_do_what_the_routes_do(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    from tests.e2e.test_dashboard import csrf_of

    repo = forge_repo(tmp_path, forge, "github.test", "team/ui-buttons")
    job = finished_job(fdaemon, repo, agent, prompt="Buttons")
    jid = job["id"]
    with httpx.Client(base_url=fdaemon.url, timeout=30) as ui:
        assert ui.post("/ui/login", data={"token": fdaemon.token}).status_code == 303
        page = ui.get(f"/ui/jobs/{jid}").text
        assert f"/jobs/{jid}/push" in page and f"/jobs/{jid}/pr" in page
        headers = {"X-CSRF-Token": csrf_of(ui, f"/ui/jobs/{jid}"), "HX-Request": "true"}
        pushed = ui.post(f"/ui/jobs/{jid}/push", headers=headers)
        assert pushed.status_code == 200, pushed.text
        bare = forge.root / "team/ui-buttons.git"
        assert git(bare, "rev-parse", job["branch"]) == job["head"]
        opened = ui.post(f"/ui/jobs/{jid}/pr", headers=headers)
        assert opened.status_code == 200, opened.text
    shown = fdaemon.job(jid)
    assert shown["pr_number"] == 1 and shown["pr_url"] in opened.text
    assert len(forge.pulls[("github", "team/ui-buttons")]) == 1
    secrets_absent(fdaemon, jid)


@pytest.mark.parametrize("kind", list(KINDS))
def test_pr_already_open_on_the_forge_is_found_and_recorded(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any, kind: str
) -> None:
    from tests.forgefake import Pull

    host = KINDS[kind][0]
    name = f"exists-{kind}"
    repo = forge_repo(tmp_path, forge, host, f"team/{name}")
    job = finished_job(fdaemon, repo, agent)
    pulls = forge.pulls.setdefault((kind, f"team/{name}"), [])
    pulls.append(Pull(1, "someone-else", "main", "other", "", False))
    # A fork's open PR from a branch of the same name: not ours, never recorded.
    pulls.append(Pull(2, job["branch"], "main", "a fork's", "", False, head_repo="fork/copy"))
    pulls.append(Pull(3, job["branch"], "main", "made by hand", "", False))
    # Labels asked for reach the PR found (a crash after the forge made it, or by hand).
    resp = fdaemon.api.post(f"/jobs/{job['id']}/pr", json={"labels": ["agent"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["changed"] is False
    shown = resp.json()["job"]
    assert shown["pr_number"] == 3 and shown["pr_state"] == "open"
    assert shown["pr_url"].endswith("/3")
    assert len(pulls) == 3
    assert pulls[2].labels == ["agent"] and pulls[1].labels == []


def test_a_refused_label_keeps_the_pr_recorded(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    repo = forge_repo(tmp_path, forge, "github.test", "team/labels")
    job = finished_job(fdaemon, repo, agent)
    forge.refuse_labels = True
    try:
        resp = fdaemon.api.post(f"/jobs/{job['id']}/pr", json={"labels": ["agent"]})
    finally:
        forge.refuse_labels = False
    assert resp.status_code == 200, resp.text
    shown = resp.json()["job"]
    assert shown["pr_number"] == 1 and shown["pr_url"]
    assert "labels were not set" in resp.json()["message"]
    assert "forbade labelling the pull request (403)" in shown["forge_error"]


def pr_error(d: Daemon, job_id: int) -> str:
    resp = d.api.post(f"/jobs/{job_id}/pr")
    assert resp.status_code >= 400, resp.text
    message = str(resp.json()["error"]["message"])
    assert "\n" not in message and TOKEN not in message and "wrong-token" not in message
    assert d.job(job_id)["forge_error"] == message
    return message


def test_pr_errors_are_one_line_naming_the_forge(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    # 401: the token for the host is wrong.
    repo = forge_repo(tmp_path / "a", forge, "badtoken.test", "team/bad")
    job = finished_job(fdaemon, repo, agent)
    message = pr_error(fdaemon, job["id"])
    assert "GitHub (badtoken.test) refused the token" in message
    assert "DISPATCHER_FORGE_TOKENS" in message
    log = (fdaemon.state_dir / "jobs" / str(job["id"]) / "agent.log").read_text()
    assert "wrong-token" not in log and "pull request failed" in log
    logged = [
        json.loads(line)
        for line in fdaemon.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    warned = [
        r for r in logged if r.get("job_id") == job["id"] and "pull request failed" in r["message"]
    ]
    assert warned and "wrong-token" not in fdaemon.log_path.read_text()

    # 404: the forge has no such repository.
    repo = init_repo(tmp_path / "b" / "app")
    git(repo, "remote", "add", "origin", "git@gitea.test:team/missing.git")
    bare = tmp_path / "b" / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "config", "remote.origin.pushurl", str(bare))
    job = finished_job(fdaemon, repo, agent)
    message = pr_error(fdaemon, job["id"])
    assert "Gitea (gitea.test) has no repository team/missing" in message

    # No token at all for the host: said before anything is pushed.
    repo = init_repo(tmp_path / "c" / "app")
    git(repo, "remote", "add", "origin", "ssh://git@notoken.test:2222/team/x.git")
    job = finished_job(fdaemon, repo, agent)
    assert "no token for notoken.test" in pr_error(fdaemon, job["id"])
    assert fdaemon.job(job["id"])["pushed_sha"] is None

    # A URL holding credentials (the user's own config): they are not echoed.
    repo = init_repo(tmp_path / "e" / "app")
    git(repo, "remote", "add", "origin", "http://someone:pa55word@127.0.0.1:9/team/x.git")
    job = finished_job(fdaemon, repo, agent)
    resp = fdaemon.api.post(f"/jobs/{job['id']}/push")
    assert resp.status_code == 409, resp.text
    assert "pa55word" not in resp.text and "could not be reached" in resp.json()["error"]["message"]
    assert "pa55word" not in (fdaemon.state_dir / "jobs" / str(job["id"]) / "agent.log").read_text()

    # A host that is no forge the daemon knows.
    repo = init_repo(tmp_path / "d" / "app")
    git(repo, "remote", "add", "origin", "https://unknown.example/team/x.git")
    job = finished_job(fdaemon, repo, agent)
    assert "not a forge the daemon knows" in pr_error(fdaemon, job["id"])

    # Rate limits (GitHub's 403 with X-RateLimit-Remaining: 0, GitLab's 429).
    for kind in ("github", "gitlab"):
        repo = forge_repo(tmp_path / f"rl-{kind}", forge, KINDS[kind][0], f"team/rl-{kind}")
        job = finished_job(fdaemon, repo, agent)
        forge.rate_limited = True
        try:
            message = pr_error(fdaemon, job["id"])
        finally:
            forge.rate_limited = False
        assert "rate-limited" in message and "try again later" in message
        # The push went through before; the retry opens it.
        resp = fdaemon.api.post(f"/jobs/{job['id']}/pr")
        assert resp.status_code == 200, resp.text
        assert resp.json()["job"]["forge_error"] is None


# ------------------------------------------------------------------ on-success

ON_SUCCESS_YML = """\
version: 1
agents: {bot: BOT}
defaults: {on-success: {push: true}}
triggers:
  pushed:
    on: {issues: {types: [opened], labels: [push]}}
    agent: bot
    prompt: "Push: ${{ event.issue.title }}"
  reviewed:
    on: {issues: {types: [opened], labels: [pr]}}
    agent: bot
    prompt: "PR: ${{ event.issue.title }}"
    on-success: {pr: {draft: true, labels: [agent]}}
"""


def test_on_success_from_the_trigger_file_pushes_and_opens_the_pr(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    script = agent("bot.sh", WRITE)
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hi\n",
            ".dispatcher/triggers.yml": ON_SUCCESS_YML.replace("BOT", script),
        },
    )
    forge.bare("team/auto")
    git(repo, "remote", "add", "origin", "https://github.test/team/auto.git")
    git(repo, "config", "remote.origin.pushurl", f"{forge.url}/team/auto.git")
    name = fdaemon.add_repo(repo)
    fdaemon.cli("issue", name, "one", "--label", "push")
    fdaemon.cli("issue", name, "two", "--label", "pr")

    def jobs() -> list[dict[str, Any]]:
        return list(fdaemon.api.get("/jobs", params={"repo": name}).json()["items"])

    wait_until(lambda: len(jobs()) == 2, lambda: f"both issues' jobs: {jobs()}", timeout=60)
    by_prompt = {j["prompt"]: j for j in jobs()}
    pushed, reviewed = by_prompt["Push: one"], by_prompt["PR: two"]
    wait_until(
        lambda: fdaemon.job(pushed["id"])["pushed_sha"],
        lambda: f"the defaults' push: {fdaemon.job(pushed['id'])}",
        timeout=60,
    )
    done = wait_until(
        lambda: (j := fdaemon.job(reviewed["id"]))["pr_url"] and j,
        lambda: f"the PR: {fdaemon.job(reviewed['id'])}",
        timeout=60,
    )
    assert done["state"] == "succeeded" and done["pr_state"] == "draft"
    assert done["on_success"]["pr"] == {"draft": True, "base": None, "labels": ["agent"]}
    assert fdaemon.job(pushed["id"])["pr_url"] is None  # push only
    pull = forge.pulls[("github", "team/auto")][0]
    assert pull.head == reviewed["branch"] and pull.labels == ["agent"] and pull.draft
    bare = forge.root / "team/auto.git"
    assert git(bare, "rev-parse", pushed["branch"]) == fdaemon.job(pushed["id"])["head"]


def issue_job(d: Daemon, name: str, label: str) -> int:
    """File an issue labelled ``label`` in repo ``name``; the id of the job it starts."""
    d.cli("issue", name, "one", "--label", label)
    return int(
        wait_until(
            lambda: (
                (items := d.api.get("/jobs", params={"repo": name}).json()["items"])
                and items[0]["id"]
            ),
            "the issue's job",
            timeout=60,
        )
    )


def forge_failure(d: Daemon, job_id: int, what: str) -> dict[str, Any]:
    """The job once its forge_error is recorded."""
    return dict(wait_until(lambda: (j := d.job(job_id))["forge_error"] and j, what, timeout=60))


def test_on_success_failure_is_recorded_and_the_job_still_succeeds(
    fdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    script = agent("bot.sh", WRITE)
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hi\n",
            ".dispatcher/triggers.yml": ON_SUCCESS_YML.replace("BOT", script),
        },
    )
    git(repo, "remote", "add", "origin", str(tmp_path / "nowhere.git"))
    name = fdaemon.add_repo(repo)
    done = forge_failure(fdaemon, issue_job(fdaemon, name, "push"), "the failed push")
    assert done["state"] == "succeeded"
    assert "push of" in done["forge_error"] and "refused" in done["forge_error"]


def test_an_on_success_refused_before_the_push_is_recorded_too(
    fdaemon: Daemon, forge: FakeForge, tmp_path: Path, agent: Any
) -> None:
    """A label the trigger file let through but a pull request refuses (a comma) is a
    recorded failure, like a refused push: on the job, so no restart retries it."""
    script = agent("bot.sh", WRITE)
    yml = ON_SUCCESS_YML.replace("BOT", script).replace("labels: [agent]", 'labels: ["a,b"]')
    repo = forge_repo(tmp_path, forge, "github.test", "team/bad-label")
    (repo / ".dispatcher").mkdir()
    (repo / ".dispatcher" / "triggers.yml").write_text(yml)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "triggers")
    name = fdaemon.add_repo(repo)
    job_id = issue_job(fdaemon, name, "pr")
    done = forge_failure(fdaemon, job_id, "the refused pr")
    assert done["state"] == "succeeded" and done["pr_url"] is None
    error = done["forge_error"]
    assert error.startswith("the trigger file's on-success: ") and "\n" not in error, error
    log = (fdaemon.state_dir / "jobs" / str(job_id) / "agent.log").read_text()
    assert f"on-success failed: {error}" in log


@pytest.mark.parametrize(
    "point",
    [
        "forge.before-on-success",  # nothing pushed nor opened yet
        "forge.pushed",  # the remote has the branch; the job does not say so
        "forge.pr-opened",  # the forge made the PR; the job does not say so
    ],
)
def test_kill_9_during_the_on_success_pr_opens_it_once_at_the_next_start(
    daemon_factory: Callable[..., Daemon], forge: FakeForge, tmp_path: Path, agent: Any, point: str
) -> None:
    faults, slug = tmp_path / "faults", point.replace(".", "-")
    d = daemon_factory(
        DISPATCHER_FAULT_DIR=str(faults),
        DISPATCHER_FORGES=json.dumps({"github.test": {"kind": "github", "api": f"{forge.url}/gh"}}),
        DISPATCHER_FORGE_TOKENS=json.dumps({"github.test": TOKEN, "127.0.0.1": TOKEN}),
    ).start()
    script = agent("bot.sh", WRITE)
    repo = init_repo(
        tmp_path / "app",
        files={
            "README.md": "hi\n",
            ".dispatcher/triggers.yml": ON_SUCCESS_YML.replace("BOT", script),
        },
    )
    forge.bare(f"team/crash-{slug}")
    git(repo, "remote", "add", "origin", f"https://github.test/team/crash-{slug}.git")
    git(repo, "config", "remote.origin.pushurl", f"{forge.url}/team/crash-{slug}.git")
    name = d.add_repo(repo)
    reached = hold_fault(faults, point)
    d.cli("issue", name, "crash", "--label", "pr")
    wait_until(reached.exists, "the daemon to reach the on-success", timeout=60)
    job = d.api.get("/jobs", params={"repo": name}).json()["items"][0]
    assert job["state"] == "succeeded" and job["pr_url"] is None
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    release_fault(faults, point)
    d.start()
    done = wait_until(
        lambda: (j := d.job(job["id"]))["pr_url"] and j,
        lambda: f"the owed PR: {d.job(job['id'])}",
        timeout=60,
    )
    assert done["state"] == "succeeded" and done["pushed_sha"] == done["head"]
    pulls = forge.pulls[("github", f"team/crash-{slug}")]
    assert len(pulls) == 1, pulls  # never a second PR for one job
    assert done["pr_number"] == pulls[0].number
