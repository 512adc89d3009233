"""End to end: results leave the machine through a repo's hub (docs/cluster.md, step 6).

A bare hub repository in tmp, a clone of it registered with a real daemon with
``hub: hub`` (the clone's remote of that name), real agents: the job branch on the
hub when a job ends with commits (whatever its outcome), the work in progress at
``refs/dispatcher/attempts/<id>/<n>`` while an agent runs, merges made on the hub's
target and pushed with a lease (another clone moving it meanwhile), and ``kill -9``
at the new fault points.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixture import Daemon, _new_daemon, hold_fault, release_fault
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]
INTERVAL = 0.5  # DISPATCHER_ATTEMPT_PUSH_SECONDS of these daemons
COMMIT = 'printf "%s\\n" "$1" > "$2"\ngit add -A\ngit commit -q -m "agent: $2"\n'


@pytest.fixture(scope="module")
def hdaemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("hdaemon")
    d = _new_daemon(
        root,
        DISPATCHER_ATTEMPT_PUSH_SECONDS=str(INTERVAL),
        DISPATCHER_HUB_PUSH_TRIES="2",
        DISPATCHER_FAULT_DIR=str(root / "faults"),
    ).start()
    yield d
    try:
        d.cancel_active()
    finally:
        d.stop()


def faults_of(d: Daemon) -> Path:
    return Path(d.env["DISPATCHER_FAULT_DIR"])


def hub_and_clone(tmp_path: Path, files: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A bare hub (main: one commit) and a clone of it whose remote ``hub`` is it."""
    seed = init_repo(tmp_path / "seed", files=files or {"README.md": "hello\n"})
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(hub))
    git(seed, "push", "-q", str(hub), "main")
    clone = tmp_path / "app"
    git(tmp_path, "clone", "-q", "-o", "hub", str(hub), str(clone))
    for key, value in (("user.name", "Test"), ("user.email", "test@example.com")):
        git(clone, "config", key, value)
    return hub, clone


def add_hub_repo(d: Daemon, clone: Path, hub: str | None = "hub") -> str:
    name = f"h-{clone.parent.name[-20:]}".replace("_", "-")
    resp = d.api.post("/repos", json={"path": str(clone), "name": name, "hub": hub})
    assert resp.status_code == 201, resp.text
    assert resp.json()["hub"] == hub
    return name


def hub_ref(hub: Path, ref: str) -> str | None:
    out = git(hub, "for-each-ref", "--format=%(objectname)", ref)
    return out or None


def other_clone_pushes(tmp_path: Path, hub: Path, rel: str, content: str) -> str:
    """Someone else (another clone) moves the hub's main; the new tip."""
    other = tmp_path / f"other-{rel.replace('/', '-')}"
    git(tmp_path, "clone", "-q", str(hub), str(other))
    for key, value in (("user.name", "Other"), ("user.email", "other@example.com")):
        git(other, "config", key, value)
    sha = commit_file(other, rel, content, f"other: {rel}")
    git(other, "push", "-q", "origin", "main")
    return sha


def post_merge(d: Daemon, job_id: int, strategy: str = "merge") -> httpx.Response:
    with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}) as c:
        return c.post(f"/jobs/{job_id}/merge", json={"strategy": strategy}, timeout=90)


def committed_job(d: Daemon, name: str, agent: Agent, rel: str, code: int = 0) -> dict[str, Any]:
    script = agent(f"c-{rel}.sh", COMMIT + f"exit {code}\n")
    job = d.submit(name, f"write {rel}", command=[script, f"{rel} by the agent", rel])
    return d.wait(job["id"], timeout=60)


def pushed_to_hub(d: Daemon, job_id: int) -> dict[str, Any]:
    return wait_until(
        lambda: (j := d.job(job_id))["hub_sha"] and j,
        lambda: f"job {job_id}'s push to the hub: {d.job(job_id)}",
        timeout=30,
    )


# ------------------------------------------------------------------ job branches


def test_the_job_branch_is_on_the_hub_when_the_job_ends_whatever_its_outcome(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(hdaemon, clone)
    for rel, code, state in (("ok.txt", 0, "succeeded"), ("bad.txt", 3, "failed")):
        done = committed_job(hdaemon, name, agent, rel, code)
        assert done["state"] == state and done["commits_ahead"] == 1, done
        pushed = pushed_to_hub(hdaemon, done["id"])
        assert pushed["hub_sha"] == pushed["head"] and pushed["hub_error"] is None
        assert hub_ref(hub, f"refs/heads/{done['branch']}") == done["head"]
        assert git(hub, "show", f"{done['head']}:{rel}") == f"{rel} by the agent"
        log = (hdaemon.state_dir / "jobs" / str(done["id"]) / "agent.log").read_text()
        assert "to the hub hub" in log


def test_a_trigger_files_hub_is_the_repos_when_it_sets_none(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(
        tmp_path, {"README.md": "hi\n", ".dispatcher/triggers.yml": "version: 1\nhub: hub\n"}
    )
    name = add_hub_repo(hdaemon, clone, hub=None)
    done = committed_job(hdaemon, name, agent, "filed.txt")
    assert pushed_to_hub(hdaemon, done["id"])["hub_sha"] == done["head"]
    assert hub_ref(hub, f"refs/heads/{done['branch']}") == done["head"]
    resp = post_merge(hdaemon, done["id"])
    assert resp.status_code == 200 and "on the hub hub" in resp.json()["message"], resp.text
    assert hub_ref(hub, "refs/heads/main") == resp.json()["job"]["merged_sha"]


def test_a_repo_without_a_hub_pushes_nothing_and_an_unreachable_hub_is_one_line(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(tmp_path)
    plain = add_hub_repo(hdaemon, clone, hub=None)  # the default: off
    done = committed_job(hdaemon, plain, agent, "plain.txt")
    assert done["state"] == "succeeded" and done["hub_sha"] is None
    assert hub_ref(hub, f"refs/heads/{done['branch']}") is None
    # A hub that is not one of the clone's remotes is refused in one line, nothing set.
    refused = hdaemon.cli("repo", "update", plain, "--hub", "nope", check=False)
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert refused.stderr.strip().endswith(
        f"hub 'nope': {clone} has no remote 'nope' (its remotes: hub); add it "
        "(`git remote add nope URL`) or name one of those"
    ), refused.stderr
    assert hdaemon.api.get(f"/repos/{plain}").json()["hub"] is None
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(hub), str(other))
    added = hdaemon.api.post("/repos", json={"path": str(other), "name": "o", "hub": "hub"})
    assert (added.status_code, added.json()["error"]["code"]) == (422, "invalid_input")
    assert "has no remote 'hub' (its remotes: origin)" in added.json()["error"]["message"]
    assert hdaemon.api.get("/repos/o").status_code == 404  # not registered
    # Now with a hub that is not there: two tries (DISPATCHER_HUB_PUSH_TRIES), then why.
    git(clone, "remote", "add", "gone", str(tmp_path / "no-such-hub.git"))
    out = hdaemon.cli("repo", "update", plain, "--hub", "gone")  # the CLI's way
    assert out.stdout.strip() == f"updated {plain}: hub gone"
    assert "hub             gone" in hdaemon.cli("repo", "show", plain).stdout
    done = committed_job(hdaemon, plain, agent, "lost.txt")
    failed = wait_until(
        lambda: (j := hdaemon.job(done["id"]))["hub_error"] and j,
        lambda: f"the hub push's failure: {hdaemon.job(done['id'])}",
        timeout=30,
    )
    error = failed["hub_error"]
    assert "\n" not in error and "gone" in error and failed["hub_sha"] is None, error
    out = hdaemon.cli("repo", "update", plain, "--clear", "hub")
    assert out.stdout.strip() == f"updated {plain}: hub default"
    assert hdaemon.api.get(f"/repos/{plain}").json()["hub"] is None


# ------------------------------------------------------------------ work in progress


def _wip_holding(hub: Path, ref: str, text: str) -> str | None:
    """The sha of ``ref`` on the hub when its WIP.txt holds ``text``; None before."""
    sha = hub_ref(hub, ref)
    if sha is None:
        return None
    try:
        return sha if git(hub, "show", f"{sha}:WIP.txt") == text else None
    except AssertionError:  # a snapshot without the file yet
        return None


def test_work_in_progress_reaches_the_hub_while_the_agent_runs_without_touching_its_index(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(tmp_path, {"README.md": "hello\n", "notes.md": "n\n"})
    name = add_hub_repo(hdaemon, clone)
    go = tmp_path / "go"
    script = agent(
        "slow.sh",
        'echo "draft 1" > WIP.txt\necho "changed" >> README.md\necho staged >> notes.md\n'
        f"git add notes.md\ntouch {go}.drafted\n"
        f'while [ ! -e {go}.1 ]; do sleep 0.05; done\necho "draft 2" > WIP.txt\n'
        f"while [ ! -e {go}.2 ]; do sleep 0.05; done\n"
        'rm WIP.txt\necho "final" > DONE.txt\n',
    )
    job = hdaemon.submit(name, "slow work", command=[script])
    ref = f"refs/dispatcher/attempts/{job['id']}/1"
    # A snapshot may be taken while the agent is between its writes: the one to look at
    # is the first after they are all made (the next interval's, as the tree changed).
    wait_until(Path(f"{go}.drafted").exists, "the agent's first drafts", timeout=30)
    first = wait_until(
        lambda: _wip_holding(hub, ref, "draft 1"), f"{ref} on the hub with draft 1", timeout=30
    )
    running = hdaemon.job(job["id"])
    assert running["state"] == "running", running
    base, worktree = running["base"], Path(running["worktree"])
    assert git(hub, "rev-parse", f"{first}^") == base  # the branch's head is its parent
    assert git(hub, "show", f"{first}:WIP.txt") == "draft 1"
    assert git(hub, "show", f"{first}:README.md") == "hello\nchanged"
    # The agent's own index, HEAD and branch are as it left them.
    assert git(worktree, "rev-parse", "HEAD") == base
    assert git(worktree, "rev-parse", running["branch"]) == base
    assert git(hub, "show", f"{first}:notes.md") == "n\nstaged"
    assert git(worktree, "diff", "--cached", "--name-only") == "notes.md"  # its staging
    assert git(worktree, "diff", "--name-only") == "README.md"  # not staged by us
    assert git(worktree, "ls-files", "--others", "--exclude-standard") == "WIP.txt"
    # Nothing changed: no new push (three intervals; only a wait can show an absence).
    time.sleep(3 * INTERVAL)
    assert hub_ref(hub, ref) == first
    (tmp_path / "go.1").touch()
    second = wait_until(lambda: _wip_holding(hub, ref, "draft 2"), "the second draft", timeout=30)
    assert second != first
    (tmp_path / "go.2").touch()
    done = hdaemon.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    resp = post_merge(hdaemon, job["id"])
    assert resp.status_code == 200, resp.text
    wait_until(lambda: hub_ref(hub, ref) is None, f"{ref} deleted after the merge", timeout=30)


def test_a_discarded_jobs_attempt_refs_leave_the_hub(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(hdaemon, clone)
    stop = tmp_path / "stop"
    script = agent("wip.sh", f"echo wip > WIP.txt\nwhile [ ! -e {stop} ]; do sleep 0.05; done\n")
    job = hdaemon.submit(name, "wip", command=[script])
    ref = f"refs/dispatcher/attempts/{job['id']}/1"
    wait_until(lambda: hub_ref(hub, ref), f"{ref} on the hub", timeout=30)
    stop.touch()
    assert hdaemon.wait(job["id"], timeout=60)["state"] == "succeeded"
    resp = hdaemon.api.post(f"/jobs/{job['id']}/discard")
    assert resp.status_code == 200, resp.text
    wait_until(lambda: hub_ref(hub, ref) is None, f"{ref} deleted after the discard", timeout=30)


# ------------------------------------------------------------------ merges


def test_a_merge_is_pushed_to_the_hub_and_the_local_target_follows(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(hdaemon, clone)
    done = committed_job(hdaemon, name, agent, "feature.txt")
    resp = post_merge(hdaemon, done["id"])
    assert resp.status_code == 200, resp.text
    assert "on the hub hub" in resp.json()["message"]
    merged = resp.json()["job"]
    assert merged["state"] == "merged"
    tip = hub_ref(hub, "refs/heads/main")
    assert tip == merged["merged_sha"] == git(clone, "rev-parse", "main")
    assert git(hub, "show", f"{tip}:feature.txt") == "feature.txt by the agent"
    assert (clone / "feature.txt").read_text() == "feature.txt by the agent\n"  # its checkout
    again = post_merge(hdaemon, done["id"])
    assert again.status_code == 200 and again.json()["changed"] is False


def test_a_merge_into_a_branch_only_this_clone_has_puts_it_on_the_hub(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    """A team's branch, say: made here, merged into, and on the hub with the merge."""
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(hdaemon, clone)
    git(clone, "branch", "side", "main")
    done = committed_job(hdaemon, name, agent, "side.txt")
    with httpx.Client(
        base_url=hdaemon.url, headers={"Authorization": f"Bearer {hdaemon.token}"}
    ) as c:
        resp = c.post(f"/jobs/{done['id']}/merge", json={"into": "side"}, timeout=90)
    assert resp.status_code == 200, resp.text
    tip = hub_ref(hub, "refs/heads/side")
    assert tip == resp.json()["job"]["merged_sha"] == git(clone, "rev-parse", "side")
    assert git(hub, "show", f"{tip}:side.txt") == "side.txt by the agent"
    assert hub_ref(hub, "refs/heads/main") == done["base"]  # main untouched


def merge_while_another_clone_pushes(
    d: Daemon, tmp_path: Path, agent: Agent, *, mine: str, their_file: str
) -> tuple[Path, Path, dict[str, Any], str, httpx.Response]:
    """A job that wrote ``mine``, merged while another clone pushes ``their_file`` to the
    hub's target between the merge's fetch and its push (held at ``merge.computed``):
    (hub, clone, the job, their commit, the merge's answer)."""
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(d, clone)
    done = committed_job(d, name, agent, mine)
    faults = faults_of(d)
    reached = hold_fault(faults, "merge.computed")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post_merge, d, done["id"])
        wait_until(reached.exists, "the merge to be computed", timeout=30)
        reached.unlink()
        theirs = other_clone_pushes(tmp_path, hub, their_file, "theirs\n")
        release_fault(faults, "merge.computed")
        resp = pending.result(timeout=90)
    return hub, clone, done, theirs, resp


def test_a_merge_retries_when_another_clone_moves_the_hubs_target_meanwhile(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, clone, _done, theirs, resp = merge_while_another_clone_pushes(
        hdaemon, tmp_path, agent, mine="mine.txt", their_file="theirs.txt"
    )
    assert resp.status_code == 200, resp.text
    tip = hub_ref(hub, "refs/heads/main")
    assert tip == resp.json()["job"]["merged_sha"] == git(clone, "rev-parse", "main")
    assert git(hub, "merge-base", "--is-ancestor", theirs, tip) == ""  # theirs kept
    assert git(hub, "show", f"{tip}:mine.txt") == "mine.txt by the agent"
    assert git(hub, "show", f"{tip}:theirs.txt") == "theirs"


def test_a_merge_refuses_in_one_line_when_the_hubs_new_target_conflicts(
    hdaemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    hub, _clone, done, theirs, resp = merge_while_another_clone_pushes(
        hdaemon, tmp_path, agent, mine="same.txt", their_file="same.txt"
    )
    assert resp.status_code == 409, resp.text
    message = resp.json()["error"]["message"]
    assert "conflict" in message and "same.txt" in message and "\n" not in message, message
    assert hub_ref(hub, "refs/heads/main") == theirs  # the hub has theirs only
    assert hdaemon.job(done["id"])["state"] == "succeeded"


# ------------------------------------------------------------------ kill -9


def test_kill_9_between_the_branch_push_and_the_jobs_end_record_ends_it_at_the_next_start(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    # The branch is pushed before the end is recorded (a job recorded ended has its
    # result on the hub, even if its node dies the next instant): killed in between,
    # the job is still running, and the next start ends it and pushes it again.
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(d, clone)
    point = "hub.pushed-before-end"
    reached = hold_fault(faults, point)
    script = agent("c-kept.sh", COMMIT + "exit 0\n")
    job = d.submit(name, "write kept.txt", command=[script, "kept.txt by the agent", "kept.txt"])
    wait_until(reached.exists, "the push to the hub", timeout=30)
    held = d.job(job["id"])
    assert held["state"] == "running" and held["hub_sha"] is None  # pushed, not recorded
    on_hub = hub_ref(hub, f"refs/heads/{held['branch']}")
    assert on_hub is not None and git(clone, "rev-parse", held["branch"]) == on_hub
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    release_fault(faults, point)
    d.start()
    done = d.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert done["hub_sha"] == done["head"] == on_hub and done["hub_error"] is None
    assert git(hub, "show", f"{on_hub}:kept.txt") == "kept.txt by the agent"


@pytest.mark.parametrize(
    "point",
    [
        "merge.computed",  # nothing pushed: the merge is not made, and can be made again
        "merge.hub-pushed",  # the hub has it; the local target and the job do not say so
        "merge.landed",  # the hub and the local target have it; the job does not say so
    ],
)
def test_kill_9_during_a_merge_by_push_loses_nothing_and_merges_once(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent, point: str
) -> None:
    faults = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(faults)).start()
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(d, clone)
    done = committed_job(d, name, agent, "once.txt")
    before = hub_ref(hub, "refs/heads/main")
    reached = hold_fault(faults, point)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(post_merge, d, done["id"])
        wait_until(reached.exists, f"the merge to reach {point}", timeout=30)
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    release_fault(faults, point)
    d.start()
    if point == "merge.computed":
        assert d.job(done["id"])["state"] == "succeeded"
        assert hub_ref(hub, "refs/heads/main") == before
        resp = post_merge(d, done["id"])
        assert resp.status_code == 200 and resp.json()["changed"], resp.text
    merged = d.wait(done["id"], {"merged"}, timeout=60)
    tip = hub_ref(hub, "refs/heads/main")
    assert merged["merged_sha"] == tip == git(clone, "rev-parse", "main")
    # One merge commit over the old tip, holding the job's commit: merged once.
    assert git(hub, "rev-list", "--count", f"{before}..{tip}") == "2"
    assert git(hub, "show", f"{tip}:once.txt") == "once.txt by the agent"
    assert git(clone, "status", "--porcelain") == ""  # its checkout is whole
    again = post_merge(d, done["id"])
    assert again.status_code == 200 and again.json()["changed"] is False
    assert hub_ref(hub, "refs/heads/main") == tip


def test_kill_9_before_a_merged_jobs_attempt_refs_are_deleted_deletes_them_at_the_next_start(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    faults = tmp_path / "faults"
    d = daemon_factory(
        DISPATCHER_FAULT_DIR=str(faults), DISPATCHER_ATTEMPT_PUSH_SECONDS=str(INTERVAL)
    ).start()
    hub, clone = hub_and_clone(tmp_path)
    name = add_hub_repo(d, clone)
    stop = tmp_path / "stop"
    script = agent("wip.sh", f"echo wip > WIP.txt\nwhile [ ! -e {stop} ]; do sleep 0.05; done\n")
    job = d.submit(name, "wip", command=[script])
    ref = f"refs/dispatcher/attempts/{job['id']}/1"
    wait_until(lambda: hub_ref(hub, ref), f"{ref} on the hub", timeout=30)
    stop.touch()
    assert d.wait(job["id"], timeout=60)["state"] == "succeeded"
    point = "hub.before-attempts-deleted"
    reached = hold_fault(faults, point)
    assert post_merge(d, job["id"]).status_code == 200
    wait_until(reached.exists, "the deletion of the attempt refs", timeout=30)
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    assert hub_ref(hub, ref) is not None  # merged, its refs still there
    release_fault(faults, point)
    d.start()
    wait_until(lambda: hub_ref(hub, ref) is None, f"{ref} deleted after the restart", timeout=60)
