"""End to end: the real daemon, real git repos, script agents, driven through CLI and API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixture import Daemon, LogFollower, alive_in_session, dispatcher_argv
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]

WRITE_NOTES = 'cat > NOTES.md\necho "agent saw job $DISPATCHER_JOB_ID"\n'


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(git(repo, "branch", "--list", branch))


# ------------------------------------------------------------------ run, show, diff, logs


def test_run_wait_show_diff_logs_through_cli(daemon: Daemon, repo: Path, agent: Agent) -> None:
    name = daemon.add_repo(repo)
    script = agent("notes.sh", WRITE_NOTES)
    out = daemon.cli(
        "run", name, "--prompt", "add a changelog entry", "--command", script, "--wait"
    )
    job_id = int(out.stdout.strip())

    shown = json.loads(daemon.cli("show", str(job_id), "--json").stdout)
    for key in ("id", "state", "repo", "branch", "base", "worktree", "exit_code", "trigger"):
        assert key in shown
    assert shown["state"] == "succeeded"
    assert shown["exit_code"] == 0
    assert shown["repo"] == name
    assert shown["branch"] == f"dispatcher/{job_id}-add-a-changelog-entry"
    assert shown["base"] == git(repo, "rev-parse", "main")
    assert shown["commits_ahead"] == 1
    assert shown["files_changed"] == 1
    for stamp in ("created_at", "started_at", "finished_at"):
        assert shown[stamp].endswith("Z") or shown[stamp].endswith("+00:00")
    # The worktree is outside the user's repo, under the state dir.
    worktree = Path(shown["worktree"])
    assert worktree.is_relative_to(daemon.state_dir / "worktrees")
    assert (worktree / "NOTES.md").read_text() == "add a changelog entry"
    # The user's checkout is untouched.
    assert not (repo / "NOTES.md").exists()
    assert git(repo, "status", "--porcelain") == ""

    diff = daemon.cli("diff", str(job_id)).stdout
    assert "+++ b/NOTES.md" in diff
    assert "+add a changelog entry" in diff
    log = daemon.cli("logs", str(job_id)).stdout
    assert f"agent saw job {job_id}" in log
    listing = daemon.cli("jobs", "--repo", name).stdout
    assert f"{job_id}  succeeded" in listing


def test_prompt_reaches_agent_verbatim_never_through_a_shell(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    canary = tmp_path / "pwned"
    prompt = f"fix it; $(touch {canary}) `touch {canary}` && touch {canary} | '\"\n$HOME ${{x}}"
    script = agent("copy.sh", 'cat > GOT.txt\ncp "$DISPATCHER_PROMPT_FILE" FILE.txt\n')
    job = daemon.submit(name, prompt, command=[script])
    job = daemon.wait(job["id"])
    assert job["state"] == "succeeded", job
    worktree = Path(job["worktree"])
    assert (worktree / "GOT.txt").read_text() == prompt
    assert (worktree / "FILE.txt").read_text() == prompt
    assert not canary.exists()
    # The branch name is made safe whatever the prompt says.
    assert job["branch"].startswith(f"dispatcher/{job['id']}-fix-it-touch")
    assert git(repo, "check-ref-format", "--branch", job["branch"]) == job["branch"]


def test_agent_gets_its_environment_but_not_the_daemon_token(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent("env.sh", "env | grep '^DISPATCHER_' | sort > ENV.txt\n")
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    env = dict(
        line.split("=", 1) for line in (Path(job["worktree"]) / "ENV.txt").read_text().splitlines()
    )
    assert env["DISPATCHER_JOB_ID"] == str(job["id"])
    assert env["DISPATCHER_API"] == f"http://127.0.0.1:{daemon.port}"
    assert Path(env["DISPATCHER_PROMPT_FILE"]).read_text() == "do it"
    assert env["DISPATCHER_BRANCH"] == job["branch"]
    assert env["DISPATCHER_BASE"] == job["base"]
    assert "DISPATCHER_TOKEN" not in env
    assert daemon.token not in (Path(job["worktree"]) / "ENV.txt").read_text()
    # The MCP server's two (docs/mcp.md): its URL and this run's own job token.
    assert env["DISPATCHER_MCP_URL"] == f"http://127.0.0.1:{daemon.port}/mcp"
    assert env["DISPATCHER_JOB_TOKEN"].startswith(f"dj1.{job['id']}.")


def test_logs_follow_streams_until_the_job_ends(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    release = tmp_path / "release"
    script = agent(
        "slow.sh",
        f'echo first line\nwhile [ ! -f "{release}" ]; do sleep 0.02; done\necho second line\n',
    )
    job = daemon.submit(name, command=[script])
    daemon.wait(job["id"], {"running"})
    with LogFollower(daemon, job["id"]) as follower:
        # The agent cannot write its second line before the release: seeing the first
        # one shows the stream is open and live (releasing first could let the job end
        # before the follower connects, and then nothing was followed).
        follower.wait_for("first line")
        release.touch()
        code, out, err = follower.finish()
    assert code == 0, err
    assert "first line" in out
    assert "second line" in out
    assert out.index("first line") < out.index("second line")
    assert f"job {job['id']} succeeded" in out


def test_uncommitted_leftovers_are_committed_including_deletions(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent(
        "mess.sh",
        "rm README.md\necho changed > src/app.py\nmkdir -p new/dir && echo x > new/dir/f.txt\n"
        "git add new && git commit -qm 'agent commit'\necho later > late.txt\n",
    )
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    assert job["state"] == "succeeded", job
    assert job["commits_ahead"] == 2
    branch = job["branch"]
    files = git(repo, "ls-tree", "-r", "--name-only", branch).splitlines()
    assert "README.md" not in files
    assert {"late.txt", "new/dir/f.txt", "src/app.py"} <= set(files)
    assert git(repo, "show", f"{branch}:src/app.py") == "changed"
    assert git(Path(job["worktree"]), "status", "--porcelain") == ""


def test_failing_agent_is_failed_with_its_exit_code_and_work_kept(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent("fail.sh", "echo partial > PARTIAL.txt\necho oops >&2\nexit 3\n")
    result = daemon.cli("run", name, "--prompt", "x", "--command", script, "--wait", check=False)
    assert result.returncode == 1
    job_id = int(result.stdout.strip())
    job = daemon.job(job_id)
    assert job["state"] == "failed"
    assert job["exit_code"] == 3
    assert "exit 3" in job["error"]
    assert git(repo, "show", f"{job['branch']}:PARTIAL.txt") == "partial"
    assert "oops" in daemon.api.get(f"/jobs/{job_id}/log").text


def test_missing_agent_command_fails_cleanly(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[str(tmp_path / "no-such-agent")])["id"])
    assert job["state"] == "failed"
    assert "not found" in job["error"]
    assert job["worktree"] is None
    assert not branch_exists(repo, job["branch"])
    assert not (daemon.state_dir / "worktrees" / name / str(job["id"])).exists()
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_agent_that_rewrites_history_fails_and_keeps_the_branch(
    daemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    repo = init_repo(tmp_path / "hist")
    tip = commit_file(repo, "two.txt", "2\n")
    name = daemon.add_repo(repo)
    script = agent("rewrite.sh", "git reset -q --hard HEAD~1\necho new > x.txt\n")
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    assert job["state"] == "failed"
    assert "rewrote history" in job["error"]
    assert branch_exists(repo, job["branch"])
    # main is untouched.
    assert git(repo, "rev-parse", "main") == tip


# ------------------------------------------------------------------ merge


@pytest.mark.parametrize("strategy", ["merge", "squash", "rebase", "ff"])
def test_merge_each_strategy_lands_the_change(
    daemon: Daemon, repo: Path, agent: Agent, strategy: str
) -> None:
    name = daemon.add_repo(repo)
    script = agent(
        "two.sh", "echo one > one.txt\ngit add one.txt\ngit commit -qm one\necho two > two.txt\n"
    )
    job = daemon.wait(daemon.submit(name, "make files", command=[script])["id"])
    assert job["commits_ahead"] == 2
    old_main = git(repo, "rev-parse", "main")
    out = daemon.cli("merge", str(job["id"]), "--strategy", strategy).stdout
    assert "into main" in out
    new_main = git(repo, "rev-parse", "main")
    assert new_main != old_main
    # The user's clean checkout was updated with the ref.
    assert (repo / "one.txt").read_text() == "one\n"
    assert (repo / "two.txt").read_text() == "two\n"
    assert git(repo, "status", "--porcelain") == ""
    parents = git(repo, "log", "-1", "--format=%P", "main").split()
    if strategy == "merge":
        assert parents == [old_main, job["head"]]
    elif strategy == "squash":
        assert parents == [old_main]
        assert git(repo, "rev-list", "--count", f"{old_main}..main") == "1"
    elif strategy == "ff":
        assert new_main == job["head"]
    else:
        assert git(repo, "rev-list", "--count", f"{old_main}..main") == "2"
    merged = daemon.job(job["id"])
    assert merged["state"] == "merged"
    assert merged["merged_sha"] == new_main
    assert merged["worktree"] is None
    assert not Path(job["worktree"]).exists()
    assert branch_exists(repo, job["branch"])  # kept unless --delete-branch
    # Idempotent: a second merge changes nothing and says so.
    again = daemon.api.post(f"/jobs/{job['id']}/merge", json={"strategy": strategy})
    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert git(repo, "rev-parse", "main") == new_main


def test_merge_conflict_is_refused_and_nothing_moves(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent("edit.sh", "echo agent > README.md\n")
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    user_tip = commit_file(repo, "README.md", "user\n", "user edit")
    result = daemon.cli("merge", str(job["id"]), check=False)
    assert result.returncode == 1
    assert "conflict" in result.stderr
    assert "README.md" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert git(repo, "rev-parse", "main") == user_tip
    assert (repo / "README.md").read_text() == "user\n"
    resp = daemon.api.post(f"/jobs/{job['id']}/merge", json={"strategy": "squash"})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "merge_conflict"
    assert resp.json()["error"]["details"]["files"] == ["README.md"]
    assert daemon.job(job["id"])["state"] == "succeeded"
    assert Path(job["worktree"]).is_dir()


def test_merge_into_dirty_checkout_is_refused_and_user_edits_survive(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    (repo / "src" / "app.py").write_text("my unsaved work\n")
    before = git(repo, "rev-parse", "main")
    result = daemon.cli("merge", str(job["id"]), check=False)
    assert result.returncode == 1
    assert "src/app.py" in result.stderr
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "src" / "app.py").read_text() == "my unsaved work\n"
    assert not (repo / "a.txt").exists()
    assert daemon.job(job["id"])["state"] == "succeeded"


def test_merge_into_another_branch_and_delete_branch(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    git(repo, "branch", "release")
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    main_before = git(repo, "rev-parse", "main")
    daemon.cli("merge", str(job["id"]), "--into", "release", "--delete-branch")
    assert git(repo, "rev-parse", "main") == main_before
    assert git(repo, "show", "release:a.txt") == "a"
    assert not branch_exists(repo, job["branch"])


def test_merge_refusals_for_bad_input(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    release = tmp_path / "go"
    running = daemon.submit(
        name, command=[agent("w.sh", f'while [ ! -f "{release}" ]; do sleep 0.02; done\n')]
    )
    daemon.wait(running["id"], {"running"})
    resp = daemon.api.post(f"/jobs/{running['id']}/merge")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "invalid_state"
    assert "running" in resp.json()["error"]["message"]
    release.touch()
    daemon.wait(running["id"])
    empty = daemon.wait(daemon.submit(name, command=[agent("noop.sh", "true\n")])["id"])
    resp = daemon.api.post(f"/jobs/{empty['id']}/merge")
    assert resp.status_code == 409
    assert "no commits" in resp.json()["error"]["message"]
    done = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    for hostile in ("--upload-pack=touch /tmp/x", "../../etc", "a..b", "-f"):
        resp = daemon.api.post(f"/jobs/{done['id']}/merge", json={"into": hostile})
        assert resp.status_code == 422, (hostile, resp.text)
        assert resp.json()["error"]["code"] == "invalid_input"
    resp = daemon.api.post(f"/jobs/{done['id']}/merge", json={"strategy": "octopus"})
    assert resp.status_code == 422
    resp = daemon.api.post(f"/jobs/{done['id']}/merge", json={"into": "no-such-branch"})
    assert resp.status_code == 404
    assert daemon.job(done["id"])["state"] == "succeeded"


# ------------------------------------------------------------------ discard, cancel, retry, timeout


def test_discard_removes_worktree_and_branch_idempotently(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    assert Path(job["worktree"]).is_dir()
    out = daemon.cli("discard", str(job["id"])).stdout
    assert "discarded" in out
    assert not Path(job["worktree"]).exists()
    assert not branch_exists(repo, job["branch"])
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    again = daemon.cli("discard", str(job["id"])).stdout
    assert "already discarded" in again
    assert daemon.job(job["id"])["state"] == "discarded"
    # A discarded job cannot be merged.
    resp = daemon.api.post(f"/jobs/{job['id']}/merge")
    assert resp.status_code == 409


def test_discard_of_running_job_stops_it_and_cleans_up(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    script = agent(
        "hang.sh",
        f"echo $$ > {tmp_path}/pid.tmp\nmv {tmp_path}/pid.tmp {tmp_path}/pid\nsleep 300\n",
    )
    job = daemon.submit(name, command=[script])
    session = daemon.wait(job["id"], {"running"})["pid"]
    # "running" is recorded when the agent is spawned, which can be before its first
    # line ran on a loaded machine: wait until it is really there to be stopped.
    pid = _read_pid(tmp_path / "pid")  # its $$: in its own pid namespace when sandboxed
    assert alive_in_session(session, pid)
    resp = daemon.api.post(f"/jobs/{job['id']}/discard")
    assert resp.status_code == 200, resp.text
    assert resp.json()["job"]["state"] == "discarded"
    # Gone or a zombie (which its parent may reap at any moment: read /proc/<pid> once).
    assert not alive_in_session(session, pid), f"the agent {pid} survived the discard"
    assert not branch_exists(repo, resp.json()["job"]["branch"])


def test_cancel_running_job_keeps_worktree_and_is_idempotent(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    script = agent("hang.sh", "echo started > s.tmp\nmv s.tmp started.txt\nsleep 300\n")
    job = daemon.submit(name, command=[script])
    running = daemon.wait(job["id"], {"running"})
    wait_until((Path(running["worktree"]) / "started.txt").exists, "the agent to start")
    out = daemon.cli("cancel", str(job["id"])).stdout
    assert "canceled" in out
    job = daemon.job(job["id"])
    assert job["state"] == "canceled"
    assert job["error"] == "canceled on request"
    assert job["signal"] is not None or job["exit_code"] not in (0, None)
    assert Path(job["worktree"]).is_dir()
    assert branch_exists(repo, job["branch"])
    assert git(repo, "show", f"{job['branch']}:started.txt") == "started"
    again = daemon.cli("cancel", str(job["id"])).stdout
    assert "already canceled" in again
    # Cancel of a finished job is a clear refusal.
    done = daemon.wait(daemon.submit(name, command=[agent("ok.sh", "true\n")])["id"])
    result = daemon.cli("cancel", str(done["id"]), check=False)
    assert result.returncode == 1
    assert "already finished (succeeded)" in result.stderr


def test_timeout_kills_the_whole_process_tree(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    script = agent(
        "tree.sh",
        f"sleep 300 &\necho $! > {tmp_path}/g.tmp\necho $$ > {tmp_path}/c.tmp\n"
        f"mv {tmp_path}/g.tmp {tmp_path}/grandchild\nmv {tmp_path}/c.tmp {tmp_path}/child\n"
        "wait\n",
    )
    # Five seconds from the spawn: room for the script's first lines (a few forks)
    # on a loaded machine before the timeout kills it; the timeout is what is tested.
    job = daemon.submit(name, command=[script], timeout_minutes=5 / 60)
    session = daemon.wait(job["id"], {"running", "timed_out"})["pid"] or 0  # its session
    job = daemon.wait(job["id"], timeout=60)
    assert job["state"] == "timed_out"
    assert "timed out" in job["error"]
    assert session, "the job timed out before the test saw it run"
    for which in ("child", "grandchild"):
        assert (tmp_path / which).exists(), f"the agent was stopped before it wrote {which}"
        pid = int((tmp_path / which).read_text())  # in the agent's pid namespace if sandboxed
        wait_until(
            lambda pid=pid: not alive_in_session(session, pid),
            f"{which} {pid} to end with the timeout",
        )


def _read_pid(path: Path) -> int:
    wait_until(path.exists, f"{path.name} to be written")
    return int(path.read_text())


def test_retry_queues_same_inputs_once(daemon: Daemon, repo: Path, agent: Agent) -> None:
    name = daemon.add_repo(repo)
    script = agent("fail.sh", "exit 1\n")
    job = daemon.wait(daemon.submit(name, "try hard", command=[script], timeout_minutes=5)["id"])
    assert job["state"] == "failed"
    new_id = int(daemon.cli("retry", str(job["id"])).stdout.strip())
    assert new_id != job["id"]
    new = daemon.wait(new_id)
    assert new["retry_of"] == job["id"]
    assert new["attempt"] == 2
    assert (new["prompt"], new["command"], new["base_ref"], new["timeout_s"]) == (
        "try hard",
        [script],
        "main",
        300,
    )
    again = daemon.api.post(f"/jobs/{job['id']}/retry").json()
    assert again["changed"] is False
    assert again["job"]["id"] == new_id


# ------------------------------------------------------------------ repos and bad input


def test_repo_add_refusals(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = daemon.cli("repo", "add", str(plain), check=False)
    assert result.returncode == 1
    assert "not a git repository" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = daemon.cli("repo", "add", str(tmp_path / "missing"), check=False)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    name = daemon.add_repo(repo)
    result = daemon.cli("repo", "add", str(repo), check=False)
    assert result.returncode == 1
    assert "already registered" in result.stderr
    resp = daemon.api.post("/repos", json={"path": str(repo / "src"), "name": "other"})
    assert resp.status_code == 409  # a subdir resolves to the same repo
    resp = daemon.api.post("/repos", json={"path": str(repo), "name": "../evil"})
    assert resp.status_code in (409, 422)
    shown = json.loads(daemon.cli("repo", "show", name, "--json").stdout)
    assert shown["path"] == str(repo)
    assert shown["default_branch"] == "main"


def test_unknown_ids_and_names_are_404_with_codes(daemon: Daemon) -> None:
    for method, path in [
        ("GET", "/jobs/999999"), ("POST", "/jobs/999999/merge"),
        ("POST", "/jobs/999999/discard"), ("POST", "/jobs/999999/cancel"),
        ("POST", "/jobs/999999/retry"), ("GET", "/jobs/999999/diff"),
        ("GET", "/jobs/999999/log"), ("GET", "/repos/nope"), ("DELETE", "/repos/nope"),
    ]:  # fmt: skip
        resp = daemon.api.request(method, path)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["error"]["code"] == "not_found"
    resp = daemon.api.post("/jobs", json={"repo": "nope", "prompt": "x"})
    assert resp.status_code == 404
    result = daemon.cli("show", "999999", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "dispatcher: no job with id 999999"
    result = daemon.cli("show", "abc", check=False)
    assert result.returncode != 0


def test_base_may_be_any_revision_and_a_tag_shadowing_a_branch_wins_as_in_git(
    daemon: Daemon, repo: Path
) -> None:
    name = daemon.add_repo(repo)
    first = git(repo, "rev-parse", "main")
    second = commit_file(repo, "b.txt", "b\n")
    job = daemon.submit(name, base="HEAD~1", command=["true"])
    assert (job["base"], job["target_branch"]) == (first, "main")
    git(repo, "tag", "main", first)  # `main` now names the tag first, as git resolves it
    job = daemon.submit(name, base="main", command=["true"])
    assert job["base"] == first != second
    assert daemon.wait(job["id"])["state"] == "succeeded"


def test_bad_requests_get_clear_json_errors(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    cases = [
        (b"{not json", "invalid_input"),
        (json.dumps({"repo": name}).encode(), "invalid_input"),
        (json.dumps({"repo": name, "prompt": ""}).encode(), "invalid_input"),
        (json.dumps({"repo": name, "prompt": "x", "command": []}).encode(), "invalid_input"),
        (json.dumps({"repo": name, "prompt": "x", "agent": "nope"}).encode(), "invalid_input"),
        (json.dumps({"repo": name, "prompt": "x", "base": "no-such-ref"}).encode(), "not_found"),
        (
            json.dumps({"repo": name, "prompt": "x", "base": "--output=/tmp/x"}).encode(),
            "invalid_input",
        ),
        (json.dumps({"repo": name, "prompt": "x", "unknown": 1}).encode(), "invalid_input"),
    ]
    for body, code in cases:
        resp = daemon.api.post("/jobs", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= resp.status_code < 500, (body, resp.text)
        assert resp.json()["error"]["code"] == code, (body, resp.text)
        assert resp.json()["error"]["message"]
    assert daemon.api.get("/jobs", params={"repo": name}).json()["items"] == []


def test_auth_is_required_except_health(daemon: Daemon) -> None:
    assert httpx.get(f"{daemon.url}/health").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        resp = httpx.get(f"{daemon.url}/jobs", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"
    token_file = daemon.state_dir / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{daemon.url}/openapi.json").status_code == 401  # the docs too
    env = {**daemon.cli_env, "DISPATCHER_TOKEN": "wrong"}
    result = subprocess.run(
        [*dispatcher_argv(), "jobs"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "wrong bearer token" in result.stderr


def test_repo_whose_path_vanished(daemon: Daemon, repo: Path) -> None:
    name = daemon.add_repo(repo)
    moved = repo.with_name("moved")
    shutil.move(repo, moved)
    shown = daemon.api.get(f"/repos/{name}").json()
    assert shown["exists"] is False
    resp = daemon.api.post("/jobs", json={"repo": name, "prompt": "x", "command": ["true"]})
    assert resp.status_code == 422
    assert "no longer holds a git repository" in resp.json()["error"]["message"]


def test_pagination_and_filters(daemon: Daemon, repo: Path, agent: Agent) -> None:
    name = daemon.add_repo(repo)
    ids = [daemon.submit(name, f"job {i}", command=["true"])["id"] for i in range(5)]
    for job_id in ids:
        daemon.wait(job_id)
    page1 = daemon.api.get("/jobs", params={"repo": name, "limit": 2}).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = daemon.api.get(
        "/jobs", params={"repo": name, "limit": 2, "before": page1["next_before"]}
    ).json()
    assert [j["id"] for j in page2["items"]] == ids[::-1][2:4]
    succeeded = daemon.api.get("/jobs", params={"repo": name, "state": "succeeded"}).json()["items"]
    assert len(succeeded) == 5
    assert daemon.api.get("/jobs", params={"state": "bogus"}).status_code == 422
    out = json.loads(daemon.cli("jobs", "--repo", name, "--json").stdout)
    assert [j["id"] for j in out] == ids[::-1]
    assert os.path.isdir(daemon.state_dir)


def test_concurrent_merges_of_one_job_have_one_effect(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    before = git(repo, "rev-parse", "main")
    token = daemon.token
    # All four requests leave together: otherwise the first could be answered before
    # the last thread starts, and the merges would simply run one after the other.
    together = threading.Barrier(4, timeout=30)

    def merge(_: int) -> httpx.Response:
        with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {token}"}) as c:
            together.wait()
            return c.post(f"/jobs/{job['id']}/merge", json={"strategy": "squash"}, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(merge, range(4)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert sorted(r.json()["changed"] for r in results) == [False, False, False, True]
    assert git(repo, "rev-list", "--count", f"{before}..main") == "1"


def test_discard_is_refused_for_merged_and_diff_still_works(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    name = daemon.add_repo(repo)
    job = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    daemon.cli("merge", str(job["id"]), "--delete-branch")
    result = daemon.cli("discard", str(job["id"]), check=False)
    assert result.returncode == 1
    assert "merged" in result.stderr
    diff = daemon.api.get(f"/jobs/{job['id']}/diff").json()
    assert "+a" in diff["patch"]
    assert diff["head"] == job["head"]


def test_repo_remove_refuses_active_jobs_and_cleans_worktrees(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    done = daemon.wait(daemon.submit(name, command=[agent("a.sh", "echo a > a.txt\n")])["id"])
    release = tmp_path / "go"
    hold = agent("hold.sh", f'while [ ! -f "{release}" ]; do sleep 0.02; done\n')
    active = daemon.submit(name, command=[hold])
    daemon.wait(active["id"], {"running"})
    result = daemon.cli("repo", "remove", name, check=False)
    assert result.returncode == 1
    assert "active job" in result.stderr
    release.touch()
    daemon.wait(active["id"])
    daemon.cli("repo", "remove", name)
    assert not Path(done["worktree"]).exists()
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert branch_exists(repo, done["branch"])  # commits are never lost
    assert daemon.api.get(f"/repos/{name}").status_code == 404
    assert daemon.api.get(f"/jobs/{done['id']}").status_code == 404
