"""Two daemons of two nodes on one PostgreSQL database at the same time (docs/cluster.md,
"Job operations on any node"): each has its own state dir and its own clone of one repo
(matched by their remote, a bare hub repository); what needs a job's worktree, branch,
log or agent is done by the node that holds the job, asked through any node's API."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.daemon_fixture import Daemon
from tests.e2e.test_postgres import FIRST_START_S
from tests.e2e.test_triggers import FIXTURES, GITHUB_SECRET, WEBHOOK_YML, _github, trigger_repo
from tests.gitutil import git
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

FORWARDED_BY = "X-Dispatcher-Forwarded-By"
Agent = Callable[[str, str], str]


@dataclass
class Cluster:
    a: Daemon
    b: Daemon
    name: str  # the repo, cloned on both
    a_clone: Path
    b_clone: Path
    gates: Path
    pg_url: str

    def gated(self, on: Daemon, prompt: str = "p") -> int:
        """A job that prints a line, then waits for its gate; started by ``on``."""
        script = (
            'echo "hello from $DISPATCHER_JOB_ID"; '
            f'while [ ! -f "{self.gates}/go-$DISPATCHER_JOB_ID" ]; do sleep 0.02; done; '
            'echo "$DISPATCHER_JOB_ID" > done.txt'
        )
        job = on.submit(self.name, prompt, command=["sh", "-c", script])
        return int(job["id"])

    def go(self, job_id: int) -> None:
        (self.gates / f"go-{job_id}").touch()

    def worker_of(self, d: Daemon) -> int:
        [me] = [w for w in d.api.get("/workers").json() if w["this"]]
        return int(me["id"])

    def peer_token(self) -> str:
        engine = sa.create_engine(self.pg_url)
        try:
            with engine.connect() as conn:
                value = conn.exec_driver_sql(
                    "SELECT value FROM cluster_secret WHERE name = 'peer'"
                ).scalar_one()
                return str(value)
        finally:
            engine.dispose()


ENV = {
    "DISPATCHER_WORKER_HEARTBEAT_SECONDS": "0.3",
    "DISPATCHER_WORKER_TIMEOUT_SECONDS": "1.5",
    "DISPATCHER_KILL_GRACE_SECONDS": "2",
    "DISPATCHER_MAX_PARALLEL_PER_REPO": "4",  # a repo's limit counts every node's jobs
}


def make_cluster(
    pg_url: str, daemon_factory: Callable[..., Daemon], seed: Path, tmp_path: Path,
    hub: str | None = None, **env: str,
) -> Cluster:  # fmt: skip
    """Node B started first with two slots, then node A (the jobs B started before A are
    B's: A was not there to claim them); both have a clone of ``seed`` (their remote: a
    bare hub made from it, the repo's ``hub`` setting when ``hub`` names it)."""
    bare = tmp_path / "hub.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    git(seed, "remote", "add", "origin", str(bare))
    b_clone = tmp_path / "app-b"
    git(tmp_path, "clone", "-q", str(bare), str(b_clone))
    env = {"DISPATCHER_DATABASE_URL": pg_url, **ENV, **env}
    b = daemon_factory(DISPATCHER_MAX_PARALLEL="2", **env)
    b.start(timeout=FIRST_START_S)
    added = b.api.post("/repos", json={"path": str(b_clone), "name": "app", "hub": hub})
    assert added.status_code == 201, added.text
    name = str(added.json()["name"])
    return Cluster(
        a=daemon_factory(**env), b=b, name=name, a_clone=seed, b_clone=b_clone,
        gates=tmp_path / "gates", pg_url=pg_url,
    )  # fmt: skip


@pytest.fixture
def cluster(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path, tmp_path: Path
) -> Cluster:
    return make_cluster(pg_url, daemon_factory, repo, tmp_path)


def _start_a(c: Cluster) -> Daemon:
    c.a.start(timeout=FIRST_START_S)  # while B runs: the database is shared
    assert c.a.add_repo(c.a_clone, "app") == c.name
    return c.a


def _kill_b(c: Cluster, a: Daemon) -> None:
    """Node B ``kill -9``ed, and A sees it silent."""
    assert c.b.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(
        lambda: sum(w["alive"] for w in a.api.get("/workers").json()) == 1, "B to go silent", 20
    )


def _sse(client: httpx.Client, url: str) -> Iterator[tuple[str, dict[str, object]]]:
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200, resp.read()
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                yield event, json.loads(line.split(":", 1)[1])
                event = ""


def test_a_job_run_by_one_node_is_read_merged_and_canceled_through_the_other(
    cluster: Cluster,
) -> None:
    c = cluster
    c.gates.mkdir()
    first, second = c.gated(c.b), c.gated(c.b)
    c.b.wait(first, {"running"})
    c.b.wait(second, {"running"})
    a = _start_a(c)
    workers = a.api.get("/workers").json()
    assert sorted((w["alive"], w["this"]) for w in workers) == [(True, False), (True, True)]
    assert c.b.job(first)["worker_id"] == c.worker_of(c.b)

    # Its log, from A: a page, then followed over SSE until the job ends on B.
    wait_until(lambda: "hello from" in a.api.get(f"/jobs/{first}/log").text, "B's log via A")
    page = a.api.get(f"/jobs/{first}/log")
    assert page.text == c.b.api.get(f"/jobs/{first}/log").text  # B's own page, byte for byte
    assert page.text.endswith(f"hello from {first}\n")
    assert page.headers["X-Log-Next-Offset"] == str(len(page.content))
    tail = a.api.get(f"/jobs/{first}/log", params={"tail": 6})
    assert (tail.text, tail.headers["X-Log-Start"]) == (page.text[-6:], str(len(page.content) - 6))
    events = _sse(a.api, f"/jobs/{first}/log?follow=true")
    text = ""
    while "hello from" not in text:
        kind, data = next(events)
        assert kind == "log"
        text += str(data["text"])
    assert text == page.text
    c.go(first)
    rest = list(events)
    assert rest[-1][0] == "end" and rest[-1][1]["state"] == "succeeded", rest
    text += "".join(str(data["text"]) for kind, data in rest if kind == "log")
    assert text == a.api.get(f"/jobs/{first}/log").text  # all of it, once
    assert a.job(first)["state"] == "succeeded"

    # Its diff and its merge, from A: done in B's clone, where its branch is.
    diff = a.api.get(f"/jobs/{first}/diff")
    assert diff.status_code == 200, diff.text
    assert "done.txt" in diff.json()["stat"]
    merged = a.api.post(f"/jobs/{first}/merge")
    assert merged.status_code == 200, merged.text
    assert (merged.json()["changed"], merged.json()["job"]["state"]) == (True, "merged")
    assert git(c.b_clone, "show", "main:done.txt") == str(first)
    again = a.api.post(f"/jobs/{first}/merge")  # merged: an answer from the rows, here
    assert (again.status_code, again.json()["changed"]) == (200, False)

    # A cancel from A stops B's agent.
    assert c.b.job(second)["worker_id"] == c.worker_of(c.b)
    pid = c.b.agent_group(second)
    canceled = a.api.post(f"/jobs/{second}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert c.b.wait(second)["state"] == "canceled"
    wait_until(lambda: not _alive(pid), "B's agent to end")
    # ... and a discard from A removes its branch from B's clone.
    branch = c.b.job(second)["branch"]
    assert git(c.b_clone, "branch", "--list", branch)
    gone = a.api.post(f"/jobs/{second}/discard")
    assert (gone.status_code, gone.json()["job"]["state"]) == (200, "discarded"), gone.text
    assert git(c.b_clone, "branch", "--list", branch) == ""
    assert c.a.stop() == 0 and c.b.stop() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def test_a_follow_up_runs_on_the_node_that_has_its_parent_s_worktree(
    cluster: Cluster,
) -> None:
    """B's two slots are busy; A has free slots and a clone of the repo. A follow-up of a
    job B ran waits for B (its worktree is there) rather than running on A."""
    c = cluster
    c.gates.mkdir()
    parent = c.gated(c.b)
    c.go(parent)
    assert c.b.wait(parent)["state"] == "succeeded"
    busy, busy_too = c.gated(c.b), c.gated(c.b)
    c.b.wait(busy, {"running"})
    c.b.wait(busy_too, {"running"})
    a = _start_a(c)
    made = a.api.post(f"/jobs/{parent}/followup", json={"prompt": "again"})
    assert made.status_code == 201, made.text
    follow = int(made.json()["job"]["id"])
    other = c.gated(a)  # A claims what it may: this one, not the follow-up
    a.wait(other, {"running"})
    assert a.job(other)["worker_id"] == c.worker_of(a)
    assert a.job(follow)["state"] == "queued"
    c.go(busy)
    c.go(busy_too)
    c.go(follow)
    done = c.b.wait(follow, timeout=60)
    assert (done["state"], done["worker_id"]) == ("succeeded", c.worker_of(c.b)), done
    assert done["worktree"].startswith(str(c.b.state_dir))
    c.go(other)
    a.wait(other)
    assert c.a.stop() == 0 and c.b.stop() == 0


def test_forwarded_requests_are_never_forwarded_again_and_need_the_peer_token(
    cluster: Cluster,
) -> None:
    c = cluster
    c.gates.mkdir()
    job = c.gated(c.b)
    c.b.wait(job, {"running"})
    a = _start_a(c)
    token = c.peer_token()
    # The peer token opens A's API as its own token does...
    as_peer = httpx.get(f"{a.url}/jobs/{job}", headers={"Authorization": f"Bearer {token}"})
    assert (as_peer.status_code, as_peer.json()["id"]) == (200, job)
    # ... but a request that came forwarded is not sent on to the node holding the job.
    looped = httpx.post(
        f"{a.url}/jobs/{job}/cancel",
        headers={"Authorization": f"Bearer {token}", FORWARDED_BY: "some-node"},
    )
    assert looped.status_code == 409, looped.text
    assert looped.json()["error"]["message"] == (
        f"job {job} moved to another node while this cancel was forwarded here; try again"
    )
    assert c.b.job(job)["state"] == "running"
    wrong = httpx.get(f"{a.url}/jobs/{job}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    c.go(job)
    c.b.wait(job)
    assert c.a.stop() == 0 and c.b.stop() == 0


def test_a_job_held_by_a_node_that_is_not_running_is_refused_in_one_line(
    cluster: Cluster,
) -> None:
    c = cluster
    c.gates.mkdir()
    job = c.gated(c.b)
    c.go(job)
    assert c.b.wait(job)["state"] == "succeeded"
    a = _start_a(c)
    node = c.b.job(job)
    _kill_b(c, a)
    [b_node] = [w["node"] for w in a.api.get("/workers").json() if not w["alive"]]
    for verb in ("discard", "merge"):
        refused = a.api.post(f"/jobs/{job}/{verb}")
        assert refused.status_code == 503, refused.text
        message = refused.json()["error"]["message"]
        assert message.startswith(f"job {job} is held by node ") and f"({b_node})" in message
        assert f"its {verb} needs that node" in message
    log = a.api.get(f"/jobs/{job}/log")
    assert (log.status_code, log.json()["error"]["code"]) == (503, "node_unavailable")
    assert a.job(job)["state"] == node["state"] == "succeeded"  # nothing moved
    assert c.a.stop() == 0


def test_a_finished_job_of_a_node_that_is_not_running_is_merged_from_its_branch_on_the_hub(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path, tmp_path: Path
) -> None:
    c = make_cluster(pg_url, daemon_factory, repo, tmp_path, hub="origin")
    hub = tmp_path / "hub.git"
    c.gates.mkdir()
    job = c.gated(c.b)
    c.go(job)
    ended = c.b.wait(job)
    assert ended["state"] == "succeeded" and ended["hub_sha"] == ended["head"], ended
    worktree, branch = Path(ended["worktree"]), ended["branch"]
    assert worktree.is_dir()
    a = _start_a(c)
    _kill_b(c, a)
    # What needs B's clone still waits for B.
    refused = a.api.post(f"/jobs/{job}/discard")
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "node_unavailable")

    # The hub's branch is not what the job ended with: not merged from there.
    before = git(hub, "rev-parse", "main")
    other = git(hub, "commit-tree", "-m", "someone else's", "main^{tree}")
    git(hub, "update-ref", f"refs/heads/{branch}", other)
    moved = a.api.post(f"/jobs/{job}/merge")
    assert moved.status_code == 503, moved.text
    assert f"not the {ended['hub_sha'][:12]} it ended with" in moved.json()["error"]["message"]
    assert a.job(job)["state"] == "succeeded" and git(hub, "rev-parse", "main") == before
    git(hub, "update-ref", f"refs/heads/{branch}", ended["hub_sha"])

    merged = a.api.post(f"/jobs/{job}/merge")
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["changed"], body["job"]["state"], body["job"]["merged_into"]) == (
        True,
        "merged",
        "main",
    )
    assert "from its branch there" in body["message"] and "is not running" in body["message"]
    assert git(hub, "show", "main:done.txt") == str(job)  # merged on the hub
    assert git(c.a_clone, "rev-parse", "main") == git(hub, "rev-parse", "main")  # A's follows
    assert a.job(job)["worktree"] is None
    again = a.api.post(f"/jobs/{job}/merge")
    assert (again.status_code, again.json()["changed"]) == (200, False)

    # B's next start drops the worktree it left (no job's now); its branch is kept.
    c.b.start(timeout=FIRST_START_S)
    wait_until(lambda: not worktree.exists(), "B to remove the merged job's worktree", 30)
    assert git(c.b_clone, "rev-parse", branch) == ended["hub_sha"]
    assert c.b.job(job)["state"] == "merged"
    assert c.a.stop() == 0 and c.b.stop() == 0


def test_a_prune_on_one_node_prunes_another_nodes_jobs_there_and_keeps_their_commits(
    cluster: Cluster,
) -> None:
    """The commits of a job are counted in the clone of the node that ran it: a prune
    asked of A has B prune B's jobs (the one with a commit kept, the other discarded),
    and keeps, saying why, the jobs of a node that is not running."""
    c = cluster
    kept = c.b.submit(c.name, "with a commit", command=["sh", "-c", "echo w > w.txt; exit 1"])
    empty = c.b.submit(c.name, "nothing", command=["sh", "-c", "exit 1"])
    for job in (kept, empty):
        assert c.b.wait(job["id"])["state"] == "failed"
    assert c.b.job(kept["id"])["commits_ahead"] == 1
    a = _start_a(c)
    mine = a.submit(c.name, "a's own", command=["sh", "-c", "exit 1"])
    assert a.wait(mine["id"])["state"] == "failed"

    dry = a.api.post("/jobs/prune", json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    actions = {j["id"]: (j["action"], j["commits"]) for j in dry.json()["jobs"]}
    assert actions == {
        kept["id"]: ("keep", 1),
        empty["id"]: ("discard", 0),
        mine["id"]: ("discard", 0),
    }, dry.json()
    done = a.api.post("/jobs/prune", json={})
    assert done.status_code == 200, done.text
    by_id = {j["id"]: j for j in done.json()["jobs"]}
    assert by_id[kept["id"]]["action"] == "keep" and "1 commit on" in by_id[kept["id"]]["message"]
    assert [by_id[i]["done"] for i in (empty["id"], mine["id"])] == [True, True]
    assert a.job(empty["id"])["state"] == a.job(mine["id"])["state"] == "discarded"
    assert git(c.b_clone, "branch", "--list", empty["branch"]) == ""  # gone from B's clone
    assert git(c.b_clone, "rev-parse", kept["branch"]) == c.b.job(kept["id"])["head"]  # kept
    assert a.job(kept["id"])["state"] == "failed"

    # B not running: its job is kept, and the answer says why.
    _kill_b(c, a)
    down = a.api.post("/jobs/prune", json={})  # its discarded job is not listed: closed
    assert down.status_code == 200, down.text
    [item] = down.json()["jobs"]
    assert (item["id"], item["action"], item["done"]) == (kept["id"], "keep", False)
    assert "is not running; prune it there" in item["message"]
    assert a.job(kept["id"])["state"] == "failed"
    assert c.a.stop() == 0


def test_one_webhook_delivery_sent_to_both_nodes_makes_one_job(
    pg_url: str, daemon_factory: Callable[..., Daemon], agent: Agent, tmp_path: Path
) -> None:
    """The dedup key is the cluster's: the same GitHub delivery, posted to A and to B at
    once (a forge retrying through a load balancer), makes one job; the other node says
    it is a duplicate."""
    seed = trigger_repo(tmp_path, agent, WEBHOOK_YML)
    c = make_cluster(
        pg_url, daemon_factory, seed, tmp_path, DISPATCHER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET
    )
    a = _start_a(c)
    forge = {"forge_name": "Codertocat/Hello-World"}
    assert c.b.api.patch(f"/repos/{c.name}", json=forge).status_code == 200
    body = (FIXTURES / "github" / "issues.opened.json").read_bytes()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda d: _github(d, body, delivery="d-both"), (a, c.b)))
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    # Both answer with the one job: the node that came second says it is a duplicate.
    assert sorted(r.json()["duplicate"] for r in answers) == [False, True]
    made = {j for r in answers for j in r.json()["jobs"]}
    assert len(made) == 1
    assert {j["id"] for j in a.api.get("/jobs").json()["items"]} == made
    assert len(a.api.get("/events").json()) == 1
    assert a.wait(made.pop())["state"] == "succeeded"
    assert c.a.stop() == 0 and c.b.stop() == 0
