"""End to end: `dispatcher rebase` and `fetch: true` through the real daemon (docs/forge.md).

Real repositories in temp dirs, a local bare repository as the remote, small shell
scripts as agents; the concurrent change is made while the daemon is held at fault
point ``rebase.computed`` (dispatcher/faults.py).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixture import Daemon, _new_daemon, hold_fault, release_fault
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

# First run: writes CHANGE.md. A follow-up that resolves a rebase: says what it saw
# (HEAD, the files named, their markers) and resolves each file.
AGENT = r"""prompt="$(cat)"
case "$prompt" in
  *"stopped at conflicts in these files"*)
    echo "follow-up at $(git rev-parse HEAD) merging $(git rev-parse MERGE_HEAD)"
    for f in $(printf '%s\n' "$prompt" | sed -n 's/^- //p'); do
      if grep -q '^<<<<<<<' "$f"; then echo "markers in $f"; fi
      printf 'agent line\nmain line\n' > "$f"
    done ;;
  *) printf 'agent line\n' > CHANGE.md; echo "agent wrote it" ;;
esac
"""


@pytest.fixture(scope="module")
def rdaemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("rdaemon")
    # Every job fetches afresh (bursts are coalesced in tests/test_fetches.py).
    d = _new_daemon(
        root, DISPATCHER_FAULT_DIR=str(root / "faults"), DISPATCHER_FETCH_COALESCE_SECONDS="0"
    )
    d.start()
    yield d
    try:
        d.cancel_active()
    finally:
        d.stop()


def faults(d: Daemon) -> Path:
    return Path(d.env["DISPATCHER_FAULT_DIR"])


def finished(d: Daemon, repo: Path, agent: Any, **body: Any) -> tuple[str, dict[str, Any]]:
    name = d.add_repo(repo)
    job = d.submit(name, "Add a change note", command=[agent("agent.sh", AGENT)], **body)
    done = d.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded" and done["commits_ahead"] == 1, done
    return name, done


def log_of(d: Daemon, job_id: int) -> str:
    return (d.state_dir / "jobs" / str(job_id) / "agent.log").read_text()


def user_view(repo: Path) -> tuple[str, str, str, str, str]:
    """What the user sees of their checkout: HEAD, main, status, a dirty file, the index."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "rev-parse", "main"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        (repo / "README.md").read_text(),
        git(repo, "ls-files", "-s"),
    )


def test_rebase_without_conflict_moves_only_the_job_branch(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    _, job = finished(rdaemon, repo, agent)
    jid, branch, old_head = job["id"], job["branch"], job["head"]
    old = git(repo, "log", "-1", "--format=%an|%ae|%ad|%B", old_head)
    tip = commit_file(repo, "OTHER.md", "main moved\n")
    (repo / "README.md").write_text("the user's uncommitted edit\n")
    (repo / "scratch.txt").write_text("untracked\n")
    before = user_view(repo)
    out = rdaemon.cli("rebase", str(jid))
    assert out.stdout.strip() == (
        f"job {jid}: {branch} rebased onto main ({tip[:12]}): 1 commit(s) replayed, head "
        f"{git(repo, 'rev-parse', branch)[:12]}"
    )
    assert user_view(repo) == before  # the user's checkout, index and files untouched
    new = git(repo, "rev-parse", branch)
    assert new != old_head and git(repo, "rev-parse", f"{branch}^") == tip
    assert git(repo, "log", "-1", "--format=%an|%ae|%ad|%B", new) == old  # author, date, message
    assert git(repo, "show", f"{branch}:CHANGE.md") == "agent line"
    shown = rdaemon.job(jid)
    assert (shown["base"], shown["rebased_onto"], shown["head"]) == (tip, tip, new)
    assert shown["commits_ahead"] == 1 and shown["files_changed"] == 1
    assert shown["rebased_at"] is not None and shown["state"] == "succeeded"
    # The job's own worktree moved with its branch: clean, on the new tip.
    wt = Path(shown["worktree"])
    assert git(wt, "rev-parse", "HEAD") == new and git(wt, "status", "--porcelain") == ""
    assert (wt / "OTHER.md").read_text() == "main moved\n"
    assert f"rebased onto main ({tip[:12]})" in log_of(rdaemon, jid)
    # Again: nothing to do, said in one line.
    again = rdaemon.api.post(f"/jobs/{jid}/rebase").json()
    assert not again["changed"] and again["message"] == (
        f"job {jid}: {branch} is on main's tip ({tip[:12]}) already"
    )
    # Its merge sees only its own change.
    assert rdaemon.api.get(f"/jobs/{jid}/diff").json()["stat"].count("|") == 1


def test_rebase_conflict_starts_a_followup_that_resolves_it_on_the_same_branch(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    _, job = finished(rdaemon, repo, agent)
    jid, branch, old_head = job["id"], job["branch"], job["head"]
    tip = commit_file(repo, "CHANGE.md", "main line\n")
    before = user_view(repo)
    resp = rdaemon.api.post(f"/jobs/{jid}/rebase")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    follow = answer["job"]
    assert answer["changed"] and follow["followup_of"] == jid and follow["branch"] == branch
    assert answer["message"] == (
        f"job {jid}: rebasing onto main ({tip[:12]}) conflicts in CHANGE.md; follow-up job "
        f"{follow['id']} resolves them in its worktree (nothing on the branch changed yet)"
    )
    done = rdaemon.wait(follow["id"], timeout=60)
    assert done["state"] == "succeeded", done
    seen = log_of(rdaemon, follow["id"])
    # The agent ran on the untouched branch, in the middle of the merge, and saw the markers.
    assert f"follow-up at {old_head} merging {tip}" in seen
    assert "markers in CHANGE.md" in seen
    head = git(repo, "rev-parse", branch)
    assert git(repo, "merge-base", "--is-ancestor", tip, head) == ""
    assert git(repo, "merge-base", "--is-ancestor", old_head, head) == ""
    assert git(repo, "show", f"{branch}:CHANGE.md") == "agent line\nmain line"
    assert (done["base"], done["rebased_onto"], done["head"]) == (tip, tip, head)
    wt = Path(done["worktree"])
    assert git(wt, "status", "--porcelain") == "" and not (wt / ".git").is_dir()
    assert user_view(repo) == before
    # It lands on main as any job does.
    merged = rdaemon.api.post(f"/jobs/{follow['id']}/merge", json={"strategy": "squash"})
    assert merged.status_code == 200, merged.text
    assert git(repo, "show", "main:CHANGE.md") == "agent line\nmain line"


# A follow-up that leaves the conflicts as they are (and ends with 0).
LAZY = r"""prompt="$(cat)"
case "$prompt" in
  *"stopped at conflicts in these files"*) echo "left them" ;;
  *) printf 'agent line\n' > CHANGE.md ;;
esac
"""


def test_a_followup_that_leaves_the_markers_fails_and_commits_no_merge(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    name = rdaemon.add_repo(repo)
    job = rdaemon.wait(rdaemon.submit(name, "Add a note", command=[agent("lazy.sh", LAZY)])["id"])
    assert job["state"] == "succeeded", job
    jid, branch, old_head = job["id"], job["branch"], job["head"]
    commit_file(repo, "CHANGE.md", "main line\n")
    resp = rdaemon.api.post(f"/jobs/{jid}/rebase")
    assert resp.status_code == 200, resp.text
    follow = resp.json()["job"]
    done = rdaemon.wait(follow["id"], timeout=60)
    wt = Path(done["worktree"])
    assert done["state"] == "failed", done
    assert done["error"] == (
        f"conflicts left in CHANGE.md; the merge of main is left under way in {wt}, not committed"
    )
    assert git(repo, "rev-parse", branch) == old_head  # no merge commit with the markers
    assert git(repo, "rev-list", "--merges", "--count", branch) == "0"
    assert done["head"] == old_head
    # The merge is left as it was: the markers, MERGE_HEAD, for a human or another follow-up.
    assert "<<<<<<<" in (wt / "CHANGE.md").read_text()
    assert git(wt, "rev-parse", "--verify", "MERGE_HEAD") == git(repo, "rev-parse", "main")


def test_two_rebases_at_once_make_one_followup_and_the_second_is_told_it_was_continued(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    _, job = finished(rdaemon, repo, agent)
    jid = job["id"]
    tip = commit_file(repo, "CHANGE.md", "main line\n")
    reached = hold_fault(faults(rdaemon), "rebase.conflict-started")
    answers: list[httpx.Response] = []

    def post() -> None:
        answers.append(rdaemon.api.post(f"/jobs/{jid}/rebase"))

    first = threading.Thread(target=post, daemon=True)
    second = threading.Thread(target=post, daemon=True)
    first.start()
    try:
        wait_until(reached.exists, "the first rebase to start its merge", 30)
        second.start()
        # A request blocked on the job's lock shows nothing to poll: give it time to
        # get there (with the follow-up made outside the lock, it would restart the
        # merge the first follow-up is about to own).
        second.join(1)
    finally:
        release_fault(faults(rdaemon), "rebase.conflict-started")
        first.join(60)
        second.join(60)
    made = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(made) == 1 and len(refused) == 1, [r.text for r in answers]
    follow = made[0].json()["job"]
    assert refused[0].status_code == 409
    assert refused[0].json()["error"]["message"] == (
        f"job {jid} was continued by follow-up job {follow['id']}, which holds its worktree "
        f"and branch now; act on job {follow['id']}"
    )
    done = rdaemon.wait(follow["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert f"merging {tip}" in log_of(rdaemon, follow["id"])  # the merge it was given
    assert len(rdaemon.api.get(f"/jobs/{jid}/runs").json()) == 2
    assert git(repo, "show", f"{job['branch']}:CHANGE.md") == "agent line\nmain line"


def test_a_branch_changed_during_the_rebase_is_refused_by_the_cas_and_nothing_is_lost(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    _, job = finished(rdaemon, repo, agent)
    jid, branch = job["id"], job["branch"]
    tip = commit_file(repo, "OTHER.md", "main moved\n")
    wt = Path(job["worktree"])
    reached = hold_fault(faults(rdaemon), "rebase.computed")
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(rdaemon.api.post(f"/jobs/{jid}/rebase")), daemon=True
    )
    thread.start()
    try:
        wait_until(reached.exists, "the rebase to reach rebase.computed", 30)
        theirs = commit_file(wt, "LATE.md", "a commit made meanwhile\n")
    finally:
        release_fault(faults(rdaemon), "rebase.computed")
        thread.join(60)
    (resp,) = answers
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == "ref_moved" and "nothing was changed" in error["message"]
    assert git(repo, "rev-parse", branch) == theirs  # the late commit is the tip still
    assert git(wt, "status", "--porcelain") == "" and (wt / "LATE.md").exists()
    assert rdaemon.job(jid)["base"] == job["base"]
    # Asked again, both commits are replayed.
    again = rdaemon.api.post(f"/jobs/{jid}/rebase")
    assert again.status_code == 200, again.text
    assert "2 commit(s) replayed" in again.json()["message"]
    new = git(repo, "rev-parse", branch)
    assert git(repo, "rev-list", "--count", f"{tip}..{new}") == "2"
    assert git(repo, "show", f"{new}:LATE.md") == "a commit made meanwhile"


def test_kill_9_after_the_branch_moved_and_before_the_job_said_so_records_the_rebase(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Any
) -> None:
    """The journal says where the branch was brought onto: the next start records the
    job's new base and head (a stale base would make a later merge replay main's own
    commits)."""
    fault_dir = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(fault_dir)).start()
    repo = init_repo(tmp_path / "app")
    _, job = finished(d, repo, agent)
    jid, branch = job["id"], job["branch"]
    tip = commit_file(repo, "OTHER.md", "main moved\n")
    reached = hold_fault(fault_dir, "rebase.landed")
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.append(_post_quietly(d, jid)), daemon=True)
    thread.start()
    wait_until(reached.exists, "the rebase to reach rebase.landed", 30)
    new = git(repo, "rev-parse", branch)
    assert git(repo, "rev-parse", f"{new}^") == tip
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    thread.join(60)
    release_fault(fault_dir, "rebase.landed")
    d.start()
    after = d.job(jid)
    assert (after["base"], after["rebased_onto"], after["head"]) == (tip, tip, new), after
    assert after["commits_ahead"] == 1 and after["files_changed"] == 1
    assert not list((d.state_dir / "merges").glob("*"))
    wt = Path(after["worktree"])
    assert git(wt, "rev-parse", "HEAD") == new and git(wt, "status", "--porcelain") == ""
    assert d.api.get(f"/jobs/{jid}/diff").json()["stat"].count("|") == 1


def _post_quietly(d: Daemon, jid: int) -> object:
    try:
        return d.api.post(f"/jobs/{jid}/rebase")
    except httpx.TransportError as exc:  # the daemon was killed under it
        return exc


def test_the_job_branch_checked_out_by_the_user_is_refused_and_their_checkout_untouched(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    _, job = finished(rdaemon, repo, agent)
    jid, branch, old_head = job["id"], job["branch"], job["head"]
    commit_file(repo, "OTHER.md", "main moved\n")
    git(repo, "checkout", "-q", "--ignore-other-worktrees", branch)  # clean, on the old tip
    before = user_view(repo)
    resp = rdaemon.api.post(f"/jobs/{jid}/rebase")
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["message"] == (
        f"{branch} is checked out in {repo.resolve()}, which the daemon does not move; "
        "check out another branch there and try again (nothing was changed)"
    )
    assert user_view(repo) == before and git(repo, "rev-parse", branch) == old_head
    assert rdaemon.job(jid)["base"] == job["base"]
    assert not list((rdaemon.state_dir / "merges").glob("rebase-*"))


def test_bad_rebase_requests_get_one_line_and_change_nothing(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    missing = rdaemon.cli("rebase", "999999", check=False)
    assert missing.returncode != 0 and missing.stderr.strip() == "dispatcher: no job with id 999999"
    repo = init_repo(tmp_path / "app")
    name = rdaemon.add_repo(repo)
    running = rdaemon.submit(name, "wait", command=["sleep", "60"])
    rdaemon.wait(running["id"], {"running"})
    resp = rdaemon.api.post(f"/jobs/{running['id']}/rebase")
    assert resp.status_code == 409
    assert resp.json()["error"]["message"] == (
        f"job {running['id']} is running; only a finished job's branch is rebased"
    )
    rdaemon.api.post(f"/jobs/{running['id']}/cancel")
    empty = rdaemon.wait(rdaemon.submit(name, "nothing", command=["true"])["id"])
    out = rdaemon.cli("rebase", str(empty["id"]), check=False)
    assert out.returncode != 0
    assert out.stderr.strip() == f"dispatcher: job {empty['id']} has no commits to rebase"
    repo = init_repo(tmp_path / "app2")
    git(repo, "branch", "feature")
    _, job = finished(rdaemon, repo, agent, base="feature")
    assert job["target_branch"] == "feature"
    git(repo, "branch", "-D", "feature")
    head = git(repo, "rev-parse", job["branch"])
    resp = rdaemon.api.post(f"/jobs/{job['id']}/rebase")
    assert resp.status_code == 409
    assert resp.json()["error"]["message"] == (
        f"job {job['id']}'s target branch feature no longer exists; nothing to rebase onto"
    )
    assert git(repo, "rev-parse", job["branch"]) == head


def test_a_pushed_job_is_told_it_needs_force_with_lease(
    rdaemon: Daemon, tmp_path: Path, agent: Any
) -> None:
    repo = init_repo(tmp_path / "app")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    _, job = finished(rdaemon, repo, agent)
    jid = job["id"]
    assert rdaemon.api.post(f"/jobs/{jid}/push").status_code == 200
    commit_file(repo, "OTHER.md", "main moved\n")
    message = rdaemon.api.post(f"/jobs/{jid}/rebase").json()["message"]
    assert message.endswith(
        "; it was pushed to origin before: its history changed, so the next push needs "
        f"`dispatcher push {jid} --force-with-lease`"
    )
    assert git(bare, "rev-parse", job["branch"]) == job["head"]  # not pushed by itself
    refused = rdaemon.api.post(f"/jobs/{jid}/push")
    assert refused.status_code == 409
    forced = rdaemon.api.post(f"/jobs/{jid}/push", json={"force_with_lease": True})
    assert forced.status_code == 200, forced.text
    assert git(bare, "rev-parse", job["branch"]) == git(repo, "rev-parse", job["branch"])


# ------------------------------------------------------------------ fetch: true


def test_fetch_true_starts_jobs_from_the_remote_tip_and_a_failed_fetch_is_one_log_line(
    rdaemon: Daemon, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    repo = init_repo(tmp_path / "app")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    upstream = commit_file(other, "UPSTREAM.md", "from the remote\n")
    git(other, "push", "-q", "origin", "main")
    local = git(repo, "rev-parse", "main")
    name = rdaemon.add_repo(repo)
    plain = rdaemon.wait(rdaemon.submit(name, "x", command=["true"])["id"])
    assert plain["base"] == local  # no fetch asked: the local main
    out = rdaemon.cli("repo", "update", name, "--fetch")
    assert out.stdout.strip() == f"updated {name}: fetch True"
    job = rdaemon.wait(rdaemon.submit(name, "x", command=["true"])["id"])
    assert job["base"] == upstream and job["target_branch"] == "main"
    assert f"fetched origin: the job starts from origin/main ({upstream[:12]})" in log_of(
        rdaemon, job["id"]
    )
    assert git(repo, "rev-parse", "main") == local  # the user's branch is not moved
    # The remote goes away: one line in the log, the job runs from the local ref.
    git(repo, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    assert rdaemon.api.patch(f"/repos/{name}", json={"fetch_remote": "origin"}).status_code == 200
    lost = rdaemon.wait(rdaemon.submit(name, "x", command=["true"])["id"])
    assert lost["state"] == "succeeded" and lost["base"] == local
    said = [line for line in log_of(rdaemon, lost["id"]).splitlines() if "fetch of" in line]
    assert len(said) == 1 and "the remote repository was not found" in said[0]
    assert f"the job starts from the local main ({local[:12]})" in said[0]
    shown = rdaemon.api.get(f"/repos/{name}").json()
    assert (shown["fetch"], shown["fetch_remote"]) == (True, "origin")
    out = rdaemon.cli("repo", "update", name, "--no-fetch", "--clear", "fetch-remote")
    assert out.stdout.strip() == f"updated {name}: fetch False, fetch_remote default"
    assert "fetch           False" in rdaemon.cli("repo", "show", name).stdout
