"""Teams end to end: the real daemon, real git, members that are small scripts.

A team's tasks start when their blockers are done, each in its own worktree
branched from the integration branch; their work lands on that branch; a
conflict becomes a conflict-fix task; messages arrive once each, in order;
limits hold; and a ``kill -9`` loses or doubles nothing.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixture import Daemon
from tests.e2e.test_environments import fake_daemon
from tests.gitutil import git, init_repo
from tests.waiting import wait_until

Agent = Callable[[str, str], str]

# A member: writes the file named by its first argument with its second, and notes where
# it ran and what its tree held when it started (the blocker's files or not).
WRITE = """\
echo "$DISPATCHER_JOB_ID $PWD $(ls | tr '\\n' ' ')" >> "{log}"
printf '%s\\n' "$2" > "$1"
"""

# A member that waits for a gate file before it writes (held while the daemon is killed).
GATED = """\
echo "$DISPATCHER_JOB_ID $PWD $(ls | tr '\\n' ' ')" >> "{log}"
while [ ! -f "{gate}" ]; do sleep 0.05; done
printf '%s\\n' "$2" > "$1"
"""

# Writes shared.txt; given a conflict-fix prompt, merges the named branch and resolves.
CONFLICTING = """\
branch=$(sed -n 's/^    git merge --no-edit //p' "$DISPATCHER_PROMPT_FILE")
if [ -n "$branch" ]; then
  git -c user.name=fix -c user.email=fix@example.com merge --no-edit "$branch" >/dev/null 2>&1
  printf 'resolved\\n' > shared.txt
  git add shared.txt
  git -c user.name=fix -c user.email=fix@example.com commit -qm "resolve" --no-edit
  exit 0
fi
printf '%s\\n' "$1" > shared.txt
"""

IDLE_LEAD = "exit 0\n"


def idle_team(d: Daemon, repo: Path, agent: Agent) -> tuple[str, dict[str, Any]]:
    """The repo registered, and a team in it whose lead only exits."""
    name = d.add_repo(repo)
    return name, create_team(d, name, agent("lead.sh", IDLE_LEAD))


def never(agent: Agent, tmp_path: Path) -> str:
    """A member that runs until it is stopped."""
    return agent("gate.sh", f'while [ ! -f "{tmp_path}/never" ]; do sleep 0.05; done\n')


def held_pair(
    d: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> tuple[dict[str, Any], int, int]:
    """A team whose task a runs until stopped and task b waits on it."""
    _, t = idle_team(d, repo, agent)
    gate = never(agent, tmp_path)
    a = add_task(d, t["id"], "first", [gate])
    return t, a, add_task(d, t["id"], "second", [gate], blocked_by=[a])


def create_team(d: Daemon, repo: str, lead: str, **body: Any) -> dict[str, Any]:
    resp = d.api.post(
        "/teams", json={"repo": repo, "goal": "build it", "lead_command": [lead], **body}
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def add_task(d: Daemon, team: int, title: str, command: list[str], **body: Any) -> int:
    resp = d.api.post(
        f"/teams/{team}/tasks", json={"title": title, "prompt": title, "command": command, **body}
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def team(d: Daemon, team_id: int) -> dict[str, Any]:
    resp = d.api.get(f"/teams/{team_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def states(d: Daemon, team_id: int) -> dict[int, str]:
    return {t["id"]: t["state"] for t in team(d, team_id)["tasks"]}


def wait_states(
    d: Daemon, team_id: int, want: dict[int, str], timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        t = team(d, team_id)
        got = {x["id"]: x["state"] for x in t["tasks"]}
        return t if all(got.get(k) == v for k, v in want.items()) else None

    return wait_until(
        reached, lambda: f"tasks {want}; they are {states(d, team_id)}", timeout, max_interval=0.25
    )


def branch_files(repo: Path, branch: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", branch).split())


def started(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


# ------------------------------------------------------------------ the graph


def test_three_tasks_run_in_order_each_in_its_worktree_and_land_on_one_branch(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    log = tmp_path / "started.log"
    write = agent("write.sh", WRITE.format(log=log))
    t = create_team(daemon, name, agent("lead.sh", IDLE_LEAD))
    assert t["branch"] == f"dispatcher/team-{t['id']}"
    assert git(repo, "rev-parse", t["branch"]) == git(repo, "rev-parse", "main")
    lead = daemon.job(t["lead_job_id"])
    assert "- add_task" in lead["prompt"] and "DISPATCHER_MCP_URL" in lead["prompt"]  # a command

    a = add_task(daemon, t["id"], "write a", [write, "a.txt", "A"])
    b = add_task(daemon, t["id"], "write b", [write, "b.txt", "B"])
    out = daemon.cli(
        "team", "task", "add", str(t["id"]), "join", "--prompt", "write c",
        "--command", f"{write} c.txt C", "--blocked-by", str(a), "--blocked-by", str(b),
    )  # fmt: skip
    c = int(out.stdout.strip())
    done = wait_states(daemon, t["id"], {a: "done", b: "done", c: "done"})

    runs = {int(line[0]): line for line in started(log)}
    jobs = {x["id"]: x["job_id"] for x in done["tasks"]}
    assert sorted(runs) == sorted(jobs.values())  # one run per task, no more
    worktrees = {runs[j][1] for j in jobs.values()}
    assert len(worktrees) == 3  # every member had a worktree of its own
    assert {"a.txt", "b.txt"} <= set(runs[jobs[c]][2:])  # c started from both blockers' work
    assert not {"a.txt", "b.txt"} & set(runs[jobs[a]][2:] + runs[jobs[b]][2:])
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, t["branch"])
    assert git(repo, "show", f"{t['branch']}:c.txt") == "C"
    for job_id in jobs.values():  # each landed by the merge engine into the team's branch
        job = daemon.job(job_id)
        assert (job["state"], job["merged_into"], job["team_id"]) == (
            "merged",
            t["branch"],
            t["id"],
        )
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout untouched
    assert not (repo / "a.txt").exists()

    shown = daemon.cli("team", "show", str(t["id"])).stdout
    assert f"#{a} write a (done" in shown and f"#{c} join (done" in shown
    assert "also after" in shown  # c is drawn under one blocker, the other named

    merged = daemon.cli("team", "merge", str(t["id"])).stdout
    assert "merged into main" in merged
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, "main")


def test_cycles_unknown_blockers_and_other_repos_are_refused(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    t, a, b = held_pair(daemon, repo, agent, tmp_path)
    gate = never(agent, tmp_path)

    resp = daemon.api.post(
        f"/teams/{t['id']}/tasks", json={"title": "x", "prompt": "x", "blocked_by": [a, 99999]}
    )
    assert resp.status_code == 422
    assert "unknown blocker(s) 99999" in resp.json()["error"]["message"]
    resp = daemon.api.put(f"/teams/{t['id']}/tasks/{a}/blockers", json={"blocked_by": [b]})
    assert resp.status_code == 409  # a runs already: its blockers are fixed
    c = add_task(daemon, t["id"], "third", [gate], blocked_by=[b])
    resp = daemon.api.put(f"/teams/{t['id']}/tasks/{b}/blockers", json={"blocked_by": [c]})
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == f"the blockers make a cycle: {b} -> {c} -> {b}"
    assert team(daemon, t["id"])["tasks"][1]["blocked_by"] == [a]  # nothing changed
    resp = daemon.api.post(
        f"/teams/{t['id']}/tasks", json={"title": "x", "prompt": "x", "repo": "elsewhere"}
    )
    assert resp.status_code == 422 and "is refused" in resp.json()["error"]["message"]
    hostile = {
        "title": "$(touch pwned) `id`",
        "prompt": "--upload-pack=touch pwned",
        "owns": ["../x"],
    }
    resp = daemon.api.post(f"/teams/{t['id']}/tasks", json=hostile)
    assert resp.status_code == 422  # owns must be inside the repo
    del hostile["owns"]
    hostile["command"] = [gate]
    resp = daemon.api.post(f"/teams/{t['id']}/tasks", json=hostile)
    assert resp.status_code == 201, resp.text
    assert not (repo / "pwned").exists()
    bad = daemon.cli(
        "team",
        "task",
        "add",
        str(t["id"]),
        "x",
        "--prompt",
        "x",
        "--blocked-by",
        "424242",
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("dispatcher: task (new): unknown blocker(s) 424242")
    assert len(bad.stderr.strip().splitlines()) == 1
    daemon.api.post(f"/teams/{t['id']}/shutdown")


# ------------------------------------------------------------------ conflicts


def test_a_conflict_moves_nothing_and_becomes_a_conflict_fix_task(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    _, t = idle_team(daemon, repo, agent)
    script = agent("conflicting.sh", CONFLICTING)
    a = add_task(daemon, t["id"], "one side", [script, "one"])
    b = add_task(daemon, t["id"], "other side", [script, "two"])
    after = add_task(daemon, t["id"], "after both", [script, "three"], blocked_by=[a, b])

    def conflicted() -> dict[str, Any] | None:
        tasks = team(daemon, t["id"])["tasks"]
        hit = [x for x in tasks if x["state"] == "conflicted"]
        return hit[0] if hit else None

    hit = wait_until(conflicted, lambda: f"a conflict: {states(daemon, t['id'])}", 60)
    assert "merge conflict in 1 file(s): shared.txt" in hit["error"]
    winner = a if hit["id"] == b else b
    head = git(repo, "rev-parse", t["branch"])
    # Nothing moved: the team's branch holds the winner's side only.
    assert git(repo, "show", f"{t['branch']}:shared.txt") == ("one" if winner == a else "two")
    loser_job = daemon.job(hit["job_id"])
    assert loser_job["state"] == "succeeded" and loser_job["merged_into"] is None

    done = wait_states(daemon, t["id"], {a: "done", b: "done", after: "done"})
    fixes = [x for x in done["tasks"] if x["fix_of"] == hit["id"]]
    assert len(fixes) == 1 and fixes[0]["state"] == "done"
    fix_job = daemon.job(fixes[0]["job_id"])
    assert "shared.txt" in fix_job["prompt"] and loser_job["branch"] in fix_job["prompt"]
    assert fix_job["base"] == head  # it started from the branch as the winner left it
    # "after" waited for the conflicted task until its fix was integrated.
    assert daemon.job(done["tasks"][2]["job_id"])["base"] != head
    assert git(repo, "show", f"{t['branch']}:shared.txt") == "three"


# ------------------------------------------------------------------ messages


def test_messages_arrive_once_each_in_order_and_a_waiting_read_wakes_on_send(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    _, t = idle_team(daemon, repo, agent)
    gate = never(agent, tmp_path)
    m = add_task(daemon, t["id"], "member", [gate])
    url = f"/teams/{t['id']}/messages"
    hostile = "$(touch /tmp/pwned) `rm -rf ~` --upload-pack=evil; '\"\n-x"
    for body in ("one", "two", hostile):
        resp = daemon.api.post(url, json={"to": f"task:{m}", "from": "lead", "body": body})
        assert resp.status_code == 201, resp.text
    got = daemon.api.get(url, params={"to": f"task:{m}"}).json()
    assert [x["body"] for x in got] == ["one", "two", hostile]
    assert [x["sender"] for x in got] == ["lead"] * 3
    assert daemon.api.get(url, params={"to": f"task:{m}"}).json() == []  # leased to that read
    acked = daemon.api.get(url, params={"to": f"task:{m}", "ack": got[-1]["id"]})
    assert acked.status_code == 200 and acked.json() == []  # delivered, nothing new

    answer: list[Any] = []
    reader = threading.Thread(
        target=lambda: answer.append(
            (daemon.api.get(url, params={"to": "lead", "wait": 60}).json(), time.monotonic())
        )
    )
    reader.start()
    time.sleep(0.3)  # let the read reach its wait (nothing to poll for: it answers nothing)
    sent = time.monotonic()
    resp = daemon.api.post(url, json={"to": "all", "from": f"task:{m}", "body": "hello all"})
    assert [x["recipient"] for x in resp.json()] == ["lead"]  # not back to the sender
    reader.join(30)
    assert not reader.is_alive()
    rows, when = answer[0]
    assert [x["body"] for x in rows] == ["hello all"]
    assert when - sent < 5  # woken by the send, not by its 60 s timeout

    # Sent while a task waits: an agent without the daemon's tools gets it in its prompt.
    gate = tmp_path / "gate"
    first = add_task(
        daemon,
        t["id"],
        "first",
        [agent("g.sh", GATED.format(log=tmp_path / "l", gate=gate)), "g.txt", "G"],
    )
    later = add_task(daemon, t["id"], "later", [agent("w.sh", "exit 0\n")], blocked_by=[first])
    note = {"to": f"task:{later}", "from": f"task:{first}", "body": "g.txt says G"}
    assert daemon.api.post(url, json=note).status_code == 201
    gate.touch()
    done = wait_states(daemon, t["id"], {later: "done"})
    later_job = daemon.job({x["id"]: x["job_id"] for x in done["tasks"]}[later])
    assert f"from task:{first}" in later_job["prompt"] and "g.txt says G" in later_job["prompt"]
    assert daemon.api.get(url, params={"to": f"task:{later}"}).json() == []  # once, in the prompt

    bad = daemon.api.get(url, params={"to": "task:999999"})
    assert bad.status_code == 404
    bad = daemon.api.post(url, json={"to": "nobody", "body": "x"})
    assert bad.status_code == 422
    daemon.api.post(f"/teams/{t['id']}/shutdown")


def test_a_waiting_read_whose_caller_gave_up_loses_nothing(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """The caller of a long poll goes away (its client timed out); the daemon's read goes
    on and takes the message sent next, an answer that reaches no one. Unacknowledged,
    that message is handed out again (same id) once its lease ends; acknowledged, never."""
    d = daemon_factory(DISPATCHER_TEAM_MESSAGE_LEASE_SECONDS="1").start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    url = f"/teams/{t['id']}/messages"
    with pytest.raises(httpx.ReadTimeout):
        d.api.get(url, params={"to": "person", "wait": 30}, timeout=0.5)
    sent = d.api.post(url, json={"to": "person", "from": "lead", "body": "do not lose me"})
    assert sent.status_code == 201, sent.text
    again = wait_until(
        lambda: d.api.get(url, params={"to": "person"}).json(), "the message again", 15
    )
    assert [m["id"] for m in again] == [sent.json()[0]["id"]]
    assert again[0]["delivered_at"] is None and again[0]["leased_until"] is not None
    # Acknowledged: a read that waits past the lease gets only what came after it.
    acked = d.api.get(url, params={"to": "person", "ack": again[0]["id"], "limit": 0})
    assert acked.status_code == 200 and acked.json() == []
    d.api.post(url, json={"to": "person", "from": "lead", "body": "next"})
    nxt = d.api.get(url, params={"to": "person", "wait": 5}).json()
    assert [m["body"] for m in nxt] == ["next"]
    d.api.get(url, params={"to": "person", "ack": nxt[-1]["id"], "limit": 0})

    # `team read` prints, then acknowledges what it printed.
    d.api.post(url, json={"to": "person", "from": "lead", "body": "for the cli"})
    printed = d.cli("team", "read", str(t["id"]), "--as", "person", "--json")
    assert [m["body"] for m in json.loads(printed.stdout)] == ["for the cli"]
    d.api.post(url, json={"to": "person", "from": "lead", "body": "last"})
    last = d.api.get(url, params={"to": "person", "wait": 5}).json()
    assert [m["body"] for m in last] == ["last"]  # the CLI acknowledged what it printed
    d.api.post(f"/teams/{t['id']}/shutdown")


# ------------------------------------------------------------------ limits and faults


def test_budget_stops_dispatch_and_says_so(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_COST="0.25")
    repo = init_repo(tmp_path / "app")
    name = d.add_repo(repo)
    lead = tmp_path / "lead.sh"
    lead.write_text("#!/bin/sh\nexit 0\n")
    lead.chmod(0o755)
    t = create_team(d, name, str(lead), budget_usd=0.1)
    a = d.api.post(
        f"/teams/{t['id']}/tasks", json={"title": "spend", "prompt": "spend", "agent": "claude"}
    ).json()["id"]
    b = d.api.post(
        f"/teams/{t['id']}/tasks",
        json={"title": "later", "prompt": "later", "agent": "claude", "blocked_by": [a]},
    ).json()["id"]
    wait_states(d, t["id"], {a: "done"})
    held = wait_until(lambda: team(d, t["id"])["held"], "the team to be held", 30)
    assert held.startswith("over budget: $0.2500 spent of $0.1000")
    assert states(d, t["id"])[b] == "waiting"
    assert team(d, t["id"])["cost_usd"] == pytest.approx(0.25)
    told = d.api.get(f"/teams/{t['id']}/messages", params={"to": "lead"}).json()
    assert any(m["body"].startswith("over budget") for m in told)
    person = d.api.get(f"/teams/{t['id']}/messages", params={"to": "person"}).json()
    assert [m["body"] for m in person if m["body"].startswith("over budget")] == [held]


def test_shutdown_cancels_members_and_leaves_the_branch(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    t, a, b = held_pair(daemon, repo, agent, tmp_path)
    job = wait_until(lambda: team(daemon, t["id"])["tasks"][0]["job_id"], "a's job", 30)
    daemon.wait(job, {"running"})
    head = git(repo, "rev-parse", t["branch"])
    out = daemon.cli("team", "shutdown", str(t["id"])).stdout
    assert "shut down" in out and "left as it is" in out
    assert daemon.job(job)["state"] == "canceled"
    assert states(daemon, t["id"]) == {a: "canceled", b: "canceled"}
    assert git(repo, "rev-parse", t["branch"]) == head
    refused = daemon.api.post(f"/teams/{t['id']}/tasks", json={"title": "x", "prompt": "x"})
    assert refused.status_code == 409
    listed = daemon.cli("team", "list", "--repo", t["repo"]).stdout.splitlines()
    assert listed == [f"{t['id']}  shut_down  {t['repo']}  $0.0000  build it"]
    again = daemon.cli("team", "retry", str(t["id"]), str(a), check=False)
    assert again.returncode == 1 and "shut_down" in again.stderr


def test_a_failed_member_fails_its_task_dependants_wait_and_retry_works(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    _, t = idle_team(daemon, repo, agent)
    flag = tmp_path / "fixed"
    flaky = agent("flaky.sh", f'[ -f "{flag}" ] || exit 3\nprintf "ok\\n" > ok.txt\n')
    write = agent("write.sh", WRITE.format(log=tmp_path / "log"))
    a = add_task(daemon, t["id"], "flaky", [flaky])
    b = add_task(daemon, t["id"], "after", [write, "b.txt", "B"], blocked_by=[a])
    failed = wait_states(daemon, t["id"], {a: "failed", b: "waiting"})
    assert "failed" in failed["tasks"][0]["error"] and "exit" in failed["tasks"][0]["error"]
    told = daemon.api.get(f"/teams/{t['id']}/messages", params={"to": "lead"}).json()
    assert any(f"task {a} (flaky) failed" in m["body"] for m in told)
    flag.touch()
    assert "retried" in daemon.cli("team", "retry", str(t["id"]), str(a)).stdout
    done = wait_states(daemon, t["id"], {a: "done", b: "done"})
    assert done["tasks"][0]["attempts"] == 2
    assert {"ok.txt", "b.txt"} <= branch_files(repo, t["branch"])


@pytest.mark.timeout(180)
def test_kill_9_mid_team_then_restart_finishes_with_nothing_lost_or_doubled(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    d = daemon_factory().start()
    repo = init_repo(tmp_path / "app")
    name = d.add_repo(repo)
    log, gate = tmp_path / "started.log", tmp_path / "gate"
    gated = agent("gated.sh", GATED.format(log=log, gate=gate))
    t = create_team(d, name, agent("lead.sh", IDLE_LEAD))
    a = add_task(d, t["id"], "a", [gated, "a.txt", "A"])
    b = add_task(d, t["id"], "b", [gated, "b.txt", "B"])
    c = add_task(d, t["id"], "c", [gated, "c.txt", "C"], blocked_by=[a, b])
    wait_until(lambda: len(started(log)) == 2, "a and b to start", 30)
    url = f"/teams/{t['id']}/messages"
    for body in ("m1", "m2", "m3"):
        d.api.post(url, json={"to": "lead", "from": f"task:{a}", "body": body})
    before = d.api.get(url, params={"to": "lead", "limit": 1}).json()
    assert [m["body"] for m in before] == ["m1"]
    d.api.get(url, params={"to": "lead", "ack": before[0]["id"], "limit": 0})  # handled

    d.stop(signal.SIGKILL)
    d.start()
    gate.touch()
    done = wait_states(d, t["id"], {a: "done", b: "done", c: "done"}, timeout=90)
    after = [
        m["body"] for m in d.api.get(url, params={"to": "lead"}).json() if m["sender"] != "daemon"
    ]
    assert after == ["m2", "m3"]  # none lost, none twice
    runs = [int(line[0]) for line in started(log)]
    assert len(runs) == len(set(runs)) == 3  # no task started twice
    jobs = [j for j in d.api.get("/jobs", params={"repo": name}).json()["items"] if j["task_id"]]
    assert sorted(j["task_id"] for j in jobs) == [a, b, c]
    assert {x["attempts"] for x in done["tasks"]} == {1}
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, t["branch"])


def test_kill_9_after_a_merge_as_the_next_task_starts_resumes_the_team(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """The restart resumes a team whose integration branch has moved past its base (a
    task merged): a task whose job was being made when the daemon died is linked to that
    job and lands, run once."""
    from tests.daemon_fixture import hold_fault, release_fault

    fault_dir = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(fault_dir)).start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    log = tmp_path / "started.log"
    write = agent("write.sh", WRITE.format(log=log))
    a = add_task(d, t["id"], "a", [write, "a.txt", "A"])
    wait_states(d, t["id"], {a: "done"})
    assert "a.txt" in branch_files(repo, t["branch"])  # the branch moved past its base
    reached = hold_fault(fault_dir, "team.job-made")
    body = {"title": "b", "prompt": "b", "command": [write, "b.txt", "B"], "blocked_by": [a]}

    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # killed under it: no answer
            d.api.post(f"/teams/{t['id']}/tasks", json=body)

    poster = threading.Thread(target=post)
    poster.start()
    wait_until(reached.exists, "b's job to be made", 30)
    d.stop(signal.SIGKILL)
    poster.join(30)
    release_fault(fault_dir, "team.job-made")
    d.start()
    b = next(x["id"] for x in team(d, t["id"])["tasks"] if x["title"] == "b")
    done = wait_states(d, t["id"], {a: "done", b: "done"}, timeout=45)
    assert {"a.txt", "b.txt"} <= branch_files(repo, t["branch"])
    assert {x["attempts"] for x in done["tasks"]} == {1}
    assert len(started(log)) == 2  # nothing ran twice


# ------------------------------------------------------------------ plans and signals

# A member of a task that needs its plan approved: it submits a plan (v0, v1 after a
# rejection) and ends; approved, it signals blocked once and does the work.
PLANNER = """\
set -e
ids=$(sed -n '1s/^Team \\([0-9]*\\), task \\([0-9]*\\):.*/\\1\\/tasks\\/\\2/p' "$DISPATCHER_PROMPT_FILE")
api="$DISPATCHER_API/teams/$ids"
post() {{ curl -sf -H "Authorization: Bearer {token}" -H 'content-type: application/json' -d "$2" "$api/$1" >/dev/null; }}
if grep -q "was approved" "$DISPATCHER_PROMPT_FILE"; then
  post signal '{{"signal": "blocked", "reason": "waiting on the schema"}}'
  printf 'built\\n' > built.txt
  exit 0
fi
n=$(grep -c "was rejected" "$DISPATCHER_PROMPT_FILE" || true)
post plan "{{\\"plan\\": \\"plan v$n\\"}}"
"""


def test_a_plan_is_approved_before_the_work_and_blocked_notifies(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    import json

    from tests.notify.helpers import Receiver

    receiver = Receiver()
    try:
        hook = {"type": "webhook", "url": receiver.url("/hook"), "on": ["blocked"]}
        d = daemon_factory(DISPATCHER_NOTIFY=json.dumps([hook])).start()
        repo = init_repo(tmp_path / "app")
        name = d.add_repo(repo)
        t = create_team(d, name, agent("lead.sh", IDLE_LEAD))
        planner = agent("planner.sh", PLANNER.format(token=d.token))
        task = add_task(d, t["id"], "planned", [planner], requires_plan=True)
        shown = wait_states(d, t["id"], {task: "plan_review"})["tasks"][0]
        assert shown["plan"] == "plan v0"
        assert "built.txt" not in branch_files(repo, t["branch"])
        first = shown["job_id"]
        lead_box = d.api.get(f"/teams/{t['id']}/messages", params={"to": "lead"}).json()
        assert any("submitted a plan:\nplan v0" in m["body"] for m in lead_box)

        out = d.cli("team", "approve", str(t["id"]), str(task), "--reject", "--feedback", "smaller")
        assert "plan rejected" in out.stdout
        again = wait_until(
            lambda: (
                (x := team(d, t["id"])["tasks"][0])["state"] == "plan_review"
                and x["job_id"] != first
                and x
            ),
            "the revised plan",
            60,
        )
        assert again["plan"] == "plan v1"
        replan = d.job(again["job_id"])
        assert replan["followup_of"] == first and "smaller" in replan["prompt"]

        by_lead = {"approve": True, "feedback": "go", "by": "lead"}
        resp = d.api.post(f"/teams/{t['id']}/tasks/{task}/approve", json=by_lead)
        assert resp.status_code == 200, resp.text
        done = wait_states(d, t["id"], {task: "done"})["tasks"][0]
        assert done["signal"] == "blocked" and done["signal_reason"] == "waiting on the schema"
        assert d.job(done["job_id"])["followup_of"] == again["job_id"]
        assert "built.txt" in branch_files(repo, t["branch"])
        receiver.wait_for(1)
        sent = json.loads(receiver.at("/hook")[0].body)
        assert sent["type"] == "job.blocked"
        person = d.api.get(f"/teams/{t['id']}/messages", params={"to": "person"}).json()
        assert [m["body"] for m in person] == [f"task {task} is blocked: waiting on the schema"]
        refused = d.api.post(f"/teams/{t['id']}/tasks/{task}/approve", json=by_lead)
        assert refused.status_code == 409
    finally:
        receiver.close()


def test_kill_9_after_a_tasks_job_is_made_starts_it_once(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    from tests.daemon_fixture import hold_fault, release_fault

    fault_dir = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(fault_dir)).start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    log = tmp_path / "started.log"
    write = agent("write.sh", WRITE.format(log=log))
    reached = hold_fault(fault_dir, "team.job-made")
    body = {"title": "once", "prompt": "once", "command": [write, "once.txt", "1"]}

    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # killed under it: no answer
            d.api.post(f"/teams/{t['id']}/tasks", json=body)

    poster = threading.Thread(target=post)
    poster.start()
    wait_until(reached.exists, "the task's job to be made", 30)
    assert [x["state"] for x in team(d, t["id"])["tasks"]] == ["starting"]
    d.stop(signal.SIGKILL)
    poster.join(30)
    release_fault(fault_dir, "team.job-made")
    d.start()
    task = team(d, t["id"])["tasks"][0]["id"]
    done = wait_states(d, t["id"], {task: "done"})
    jobs = [j for j in d.api.get("/jobs", params={"limit": 50}).json()["items"] if j["task_id"]]
    assert [j["id"] for j in jobs] == [done["tasks"][0]["job_id"]]  # one job, linked
    assert len(started(log)) == 1  # its agent ran once
    assert done["tasks"][0]["attempts"] == 1
    assert "once.txt" in branch_files(repo, t["branch"])


def test_kill_9_while_a_prompt_holds_messages_hands_them_over_once(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """Messages put into a task's prompt are held for it: a read while its job is made
    does not take them, and a restart that finds the job does not hand them out again."""
    from tests.daemon_fixture import hold_fault, release_fault

    fault_dir = tmp_path / "faults"
    d = daemon_factory(
        DISPATCHER_FAULT_DIR=str(fault_dir), DISPATCHER_TEAM_MESSAGE_LEASE_SECONDS="1"
    ).start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    gate = tmp_path / "gate"
    # It changes nothing: the integration branch stays where a restart expects it.
    gated = agent("g.sh", f'while [ ! -f "{gate}" ]; do sleep 0.05; done\n')
    first = add_task(d, t["id"], "first", [gated])
    later = add_task(d, t["id"], "later", [agent("w.sh", "exit 0\n")], blocked_by=[first])
    url, me = f"/teams/{t['id']}/messages", f"task:{later}"
    note = d.api.post(url, json={"to": me, "from": f"task:{first}", "body": "g.txt says G"})
    assert note.status_code == 201, note.text
    reached = hold_fault(fault_dir, "team.job-made")
    gate.touch()
    wait_until(reached.exists, "the later task's job to be made", 60)
    assert d.api.get(url, params={"to": me}).json() == []  # its prompt holds it
    d.stop(signal.SIGKILL)
    release_fault(fault_dir, "team.job-made")
    d.start()
    done = wait_states(d, t["id"], {later: "done"})
    job = d.job({x["id"]: x["job_id"] for x in done["tasks"]}[later])
    assert job["prompt"].count("g.txt says G") == 1
    jobs = [j for j in d.api.get("/jobs", params={"limit": 50}).json()["items"] if j["task_id"]]
    assert sorted(j["task_id"] for j in jobs) == [first, later]  # one job each
    # Delivered with its job: nothing holds the mailbox, and no read hands it out again.
    d.api.post(url, json={"to": me, "from": "lead", "body": "after"})
    assert [m["body"] for m in d.api.get(url, params={"to": me, "wait": 5}).json()] == ["after"]


def test_max_parallel_holds_tasks_until_a_place_frees(
    daemon: Daemon, repo: Path, agent: Agent, tmp_path: Path
) -> None:
    name = daemon.add_repo(repo)
    t = create_team(daemon, name, agent("lead.sh", IDLE_LEAD), max_parallel=1)
    gate = tmp_path / "gate"
    gated = agent("gated.sh", GATED.format(log=tmp_path / "log", gate=gate))
    a = add_task(daemon, t["id"], "first", [gated, "a.txt", "A"])
    b = add_task(daemon, t["id"], "second", [gated, "b.txt", "B"])
    assert states(daemon, t["id"]) == {a: "running", b: "waiting"}  # one place, taken
    gate.touch()
    wait_states(daemon, t["id"], {a: "done", b: "done"})
    first, second = (daemon.job(x["job_id"]) for x in team(daemon, t["id"])["tasks"])
    assert second["created_at"] >= first["closed_at"]  # b's job was made once a's merged
    assert {"a.txt", "b.txt"} <= branch_files(repo, t["branch"])


# ------------------------------------------------------------------ review fixes

# Writes shared.txt; given a conflict-fix prompt, does not merge the conflicted branch:
# ends with nothing ("nothing") or with a commit of its own ("other").
FIX_WITHOUT_MERGE = """\
if grep -q "git merge --no-edit" "$DISPATCHER_PROMPT_FILE"; then
  [ "{how}" = nothing ] || printf 'other\\n' > other.txt
  exit 0
fi
printf '%s\\n' "$1" > shared.txt
"""


def conflicted_task(d: Daemon, team_id: int) -> dict[str, Any]:
    def hit() -> dict[str, Any] | None:
        found = [x for x in team(d, team_id)["tasks"] if x["state"] == "conflicted"]
        return found[0] if found else None

    return wait_until(hit, lambda: f"a conflict: {states(d, team_id)}", 60)


@pytest.mark.parametrize("how", ["nothing", "other"])
def test_a_conflict_fix_that_does_not_merge_the_conflicted_work_fails(
    daemon: Daemon, repo: Path, agent: Agent, how: str
) -> None:
    _, t = idle_team(daemon, repo, agent)
    script = agent("fix.sh", FIX_WITHOUT_MERGE.format(how=how))
    a = add_task(daemon, t["id"], "one side", [script, "one"])
    b = add_task(daemon, t["id"], "other side", [script, "two"])
    hit = conflicted_task(daemon, t["id"])
    loser = daemon.job(hit["job_id"])

    def fix_ended() -> dict[str, Any] | None:
        fixes = [x for x in team(daemon, t["id"])["tasks"] if x["fix_of"] == hit["id"]]
        return fixes[0] if fixes and fixes[0]["state"] in ("done", "failed") else None

    fix = wait_until(fix_ended, lambda: f"the fix to end: {states(daemon, t['id'])}", 60)
    assert fix["state"] == "failed"
    assert fix["error"] == (
        f"conflict-fix task {fix['id']} ended without task {hit['id']}'s work "
        f"({loser['branch']} at {loser['head'][:12]}) on {t['branch']}: merge that branch "
        f"and commit; task {hit['id']} stays conflicted"
    )
    assert states(daemon, t["id"])[hit["id"]] == "conflicted"  # its work never landed
    assert {a, b} - {hit["id"]} <= {x for x, s in states(daemon, t["id"]).items() if s == "done"}
    told = daemon.api.get(f"/teams/{t['id']}/messages", params={"to": "lead"}).json()
    assert any(m["body"].startswith(f"task {fix['id']} (") and "failed" in m["body"] for m in told)
    daemon.api.post(f"/teams/{t['id']}/shutdown")


def test_kill_9_between_a_conflict_and_its_fix_task_makes_the_fix_once(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    from tests.daemon_fixture import hold_fault, release_fault

    fault_dir = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(fault_dir)).start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    reached = hold_fault(fault_dir, "team.conflicted")
    script = agent("conflicting.sh", CONFLICTING)
    a = add_task(d, t["id"], "one side", [script, "one"])
    b = add_task(d, t["id"], "other side", [script, "two"])
    wait_until(reached.exists, "a conflict to be recorded", 60)
    hit = conflicted_task(d, t["id"])
    assert [x for x in team(d, t["id"])["tasks"] if x["fix_of"]] == []  # no fix made yet
    d.stop(signal.SIGKILL)
    release_fault(fault_dir, "team.conflicted")
    d.start()
    done = wait_states(d, t["id"], {a: "done", b: "done"})
    fixes = [x for x in done["tasks"] if x["fix_of"] == hit["id"]]
    assert len(fixes) == 1 and fixes[0]["state"] == "done"
    assert "shared.txt" in d.job(fixes[0]["job_id"])["prompt"]  # the files named again
    assert git(repo, "show", f"{t['branch']}:shared.txt") == "resolved"


def spawner(*args: str) -> list[str]:
    """A member that creates one child job through MCP and ends."""
    import sys

    script = Path(__file__).parents[1] / "fakeagents" / "team_mcp_agent.py"
    return [sys.executable, str(script), "spawner", *args]


def children_of(d: Daemon, job_id: int) -> list[dict[str, Any]]:
    jobs = d.api.get("/jobs", params={"limit": 100}).json()["items"]
    return [j for j in jobs if j["parent_id"] == job_id]


def test_children_of_a_member_hold_max_parallel_and_shutdown_cancels_them(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    d = daemon_factory(DISPATCHER_TEAM_MAX_TASKS="3").start()
    repo = init_repo(tmp_path / "app")
    name = d.add_repo(repo)
    t = create_team(d, name, agent("lead.sh", IDLE_LEAD), max_parallel=1)
    gate = never(agent, tmp_path)
    spawn = add_task(d, t["id"], "spawn", spawner("command", gate))
    b = add_task(d, t["id"], "after", [gate], blocked_by=[spawn])
    wait_states(d, t["id"], {spawn: "done"})
    member = team(d, t["id"])["tasks"][0]["job_id"]
    children = wait_until(lambda: children_of(d, member), "the member's child", 30)
    child = d.wait(children[0]["id"], {"running"})
    assert child["team_id"] is None
    c = add_task(d, t["id"], "third", [gate])  # its advance sees the child's place taken
    assert states(d, t["id"]) == {spawn: "done", b: "waiting", c: "waiting"}
    refused = d.api.post(f"/teams/{t['id']}/tasks", json={"title": "x", "prompt": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        f"team {t['id']} holds 3 tasks, its limit (DISPATCHER_TEAM_MAX_TASKS); no task is added"
    )
    out = d.cli("team", "shutdown", str(t["id"])).stdout
    assert "1 job(s) canceled" in out or "2 job(s) canceled" in out
    assert d.job(child["id"])["state"] == "canceled"


def test_a_childs_cost_counts_in_the_team_budget(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_COST="0.25")
    repo = init_repo(tmp_path / "app")
    name = d.add_repo(repo)
    lead = tmp_path / "lead.sh"
    lead.write_text("#!/bin/sh\nexit 0\n")
    lead.chmod(0o755)
    t = create_team(d, name, str(lead), budget_usd=0.1, max_parallel=1)
    spawn = add_task(d, t["id"], "spawn", spawner("agent", "claude"))
    b = add_task(d, t["id"], "later", [str(lead)], blocked_by=[spawn])
    held = wait_until(lambda: team(d, t["id"])["held"], "the team to be held", 60)
    assert held.startswith("over budget: $0.2500 spent of $0.1000")
    assert states(d, t["id"]) == {spawn: "done", b: "waiting"}
    assert team(d, t["id"])["cost_usd"] == pytest.approx(0.25)


def test_a_persons_followup_of_a_team_job_carries_its_waiting_messages(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    _, t = idle_team(daemon, repo, agent)
    lead = daemon.wait(t["lead_job_id"])
    assert lead["state"] == "succeeded"
    url = f"/teams/{t['id']}/messages"
    resp = daemon.api.post(url, json={"to": "lead", "from": "person", "body": "split it in two"})
    assert resp.status_code == 201, resp.text
    out = daemon.api.post(f"/jobs/{lead['id']}/followup", json={"prompt": "go on"})
    assert out.status_code in (200, 201), out.text
    again = daemon.job(out.json()["job"]["id"])
    assert again["prompt"].startswith("go on\n\n")
    assert "from person" in again["prompt"] and "split it in two" in again["prompt"]
    assert again["team_id"] == t["id"] and again["task_id"] is None
    assert daemon.api.get(url, params={"to": "lead"}).json() == []  # once, in the prompt
    daemon.api.post(f"/teams/{t['id']}/shutdown")


def test_a_follow_up_that_cannot_be_made_leaves_the_messages_to_reads(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    _, t = idle_team(daemon, repo, agent)
    lead = daemon.wait(t["lead_job_id"])
    url = f"/teams/{t['id']}/messages"
    out = daemon.api.post(f"/jobs/{lead['id']}/followup", json={"prompt": "go on"})
    assert out.status_code in (200, 201), out.text
    daemon.api.post(url, json={"to": "lead", "from": "person", "body": "after"})
    again = daemon.api.post(f"/jobs/{lead['id']}/followup", json={"prompt": "twice"})
    assert again.status_code == 409, again.text  # already continued: no job made
    assert [m["body"] for m in daemon.api.get(url, params={"to": "lead"}).json()] == ["after"]
    daemon.api.post(f"/teams/{t['id']}/shutdown")


def test_kill_9_as_a_follow_up_is_made_confirms_its_messages_on_restart(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """The follow-up's job holds the message in its prompt: after the restart no read
    hands it out again, and the mailbox goes on (the next message is read)."""
    from tests.daemon_fixture import hold_fault, release_fault

    fault_dir = tmp_path / "faults"
    d = daemon_factory(DISPATCHER_FAULT_DIR=str(fault_dir)).start()
    _, t = idle_team(d, init_repo(tmp_path / "app"), agent)
    lead = d.wait(t["lead_job_id"])
    url = f"/teams/{t['id']}/messages"
    d.api.post(url, json={"to": "lead", "from": "person", "body": "in the prompt"})
    reached = hold_fault(fault_dir, "jobs.followup-made")

    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # killed under it: no answer
            d.api.post(f"/jobs/{lead['id']}/followup", json={"prompt": "go on"})

    poster = threading.Thread(target=post)
    poster.start()
    wait_until(reached.exists, "the follow-up's job to be made", 30)
    d.stop(signal.SIGKILL)
    poster.join(30)
    release_fault(fault_dir, "jobs.followup-made")
    d.start()
    made = d.job(lead["id"])["followed_by"]
    assert made is not None and "in the prompt" in d.job(made)["prompt"]
    d.api.post(url, json={"to": "lead", "from": "person", "body": "next"})
    assert [m["body"] for m in d.api.get(url, params={"to": "lead"}).json()] == ["next"]
    d.api.post(f"/teams/{t['id']}/shutdown")


def plan_team(d: Daemon, tmp_path: Path, **body: Any) -> tuple[dict[str, Any], int]:
    """A team whose one task, for the fake claude (no MCP tools used), needs a plan: its
    plan is its run's summary."""
    repo = init_repo(tmp_path / f"app{len(body)}")
    name = d.add_repo(repo)
    lead = tmp_path / "lead.sh"
    lead.write_text("#!/bin/sh\nexit 0\n")
    lead.chmod(0o755)
    t = create_team(d, name, str(lead), **body)
    resp = d.api.post(
        f"/teams/{t['id']}/tasks",
        json={"title": "plan", "prompt": "plan it", "agent": "claude", "requires_plan": True},
    )
    assert resp.status_code == 201, resp.text
    return t, int(resp.json()["id"])


def test_a_rejected_plan_is_replaced_by_the_revised_runs_summary(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory)
    t, task = plan_team(d, tmp_path)
    first = wait_states(d, t["id"], {task: "plan_review"})["tasks"][0]
    assert first["plan"] == d.job(first["job_id"])["summary"]
    resp = d.api.post(
        f"/teams/{t['id']}/tasks/{task}/approve", json={"approve": False, "feedback": "no"}
    )
    assert resp.status_code == 200, resp.text
    again = wait_until(
        lambda: (
            (x := team(d, t["id"])["tasks"][0])["state"] == "plan_review"
            and x["job_id"] != first["job_id"]
            and x
        ),
        "the revised plan",
        60,
    )
    revised = d.job(again["job_id"])
    assert revised["followup_of"] == first["job_id"]  # continued, not started afresh
    assert again["plan"] == revised["summary"] != first["plan"]
    d.api.post(f"/teams/{t['id']}/shutdown")


def test_deciding_a_plan_of_an_over_budget_team_starts_no_run(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = fake_daemon(daemon_factory, FAKE_AGENT_COST="0.25")
    t, task = plan_team(d, tmp_path, budget_usd=0.1)
    shown = wait_states(d, t["id"], {task: "plan_review"})["tasks"][0]
    resp = d.api.post(f"/teams/{t['id']}/tasks/{task}/approve", json={"approve": True})
    assert resp.status_code == 409
    assert resp.json()["error"]["message"] == (
        f"team {t['id']} is over budget: $0.2500 spent of $0.1000: task {task}'s plan is "
        "not decided (its answer would start a run)"
    )
    after = team(d, t["id"])
    assert after["tasks"][0]["state"] == "plan_review"
    assert after["tasks"][0]["job_id"] == shown["job_id"]  # no new run
    assert after["held"].startswith("over budget: $0.2500 spent of $0.1000")
    jobs = d.api.get("/jobs", params={"limit": 50}).json()["items"]
    assert [j["id"] for j in jobs if j["task_id"] == task] == [shown["job_id"]]


def test_waiting_message_reads_are_bounded_and_leave_other_routes_free(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    d = daemon_factory(DISPATCHER_TEAM_READ_WAITS="2").start()
    repo = init_repo(tmp_path / "app")
    _, t = idle_team(d, repo, agent)
    url = f"/teams/{t['id']}/messages"
    answers: dict[str, list[Any]] = {}

    def wait_read(who: str) -> None:  # again while the probe below holds a place
        while (resp := d.api.get(url, params={"to": who, "wait": 60}, timeout=90)).is_error:
            assert resp.status_code == 503, resp.text
        answers[who] = resp.json()

    readers = [threading.Thread(target=wait_read, args=(who,)) for who in ("lead", "person")]
    for r in readers:
        r.start()
    try:

        def refused() -> httpx.Response | None:
            resp = d.api.get(url, params={"to": "lead", "wait": 0.5})
            return resp if resp.status_code == 503 else None

        busy = wait_until(refused, "a third waiting read to be refused", 30)
        assert busy.json()["error"]["message"] == (
            "2 message reads wait already (DISPATCHER_TEAM_READ_WAITS): read without wait, "
            "or again later"
        )
        assert d.api.get(url, params={"to": "lead"}).json() == []  # no wait: answered
        assert d.api.get(f"/teams/{t['id']}").status_code == 200  # other routes too
    finally:
        for who in ("lead", "person"):
            d.api.post(url, json={"to": who, "from": "person", "body": f"hi {who}"})
        for r in readers:
            r.join(30)
    assert [m["body"] for m in answers["lead"] if m["sender"] != "daemon"] == ["hi lead"]
    assert [m["body"] for m in answers["person"]] == ["hi person"]
    assert d.api.get(url, params={"to": "lead", "wait": 0.1}).status_code == 200  # places free


def test_waiting_reads_over_the_bound_are_refused_at_once_never_queued(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, agent: Agent
) -> None:
    """Many waiting reads at once, two places: each short read is answered (a place, or
    503) within its own wait, none queued behind the long ones holding the places."""
    import time

    d = daemon_factory(DISPATCHER_TEAM_READ_WAITS="2").start()
    _, t = idle_team(d, init_repo(tmp_path / "app"), agent)
    url = f"/teams/{t['id']}/messages"
    took: list[float] = []
    go = threading.Barrier(10)

    def read(wait: float, short: bool) -> None:
        go.wait()
        start = time.monotonic()
        resp = d.api.get(url, params={"to": "person", "wait": wait}, timeout=60)
        assert resp.status_code in (200, 503), resp.text
        if short:
            took.append(time.monotonic() - start)

    threads = [threading.Thread(target=read, args=(20, False)) for _ in range(2)]
    threads += [threading.Thread(target=read, args=(0.2, True)) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads[2:]:
        th.join(30)
    assert len(took) == 8 and max(took) < 5, took
    d.api.post(url, json={"to": "person", "from": "lead", "body": "done"})
    for th in threads[:2]:
        th.join(30)


def test_an_over_budget_teams_lead_creates_no_child_job(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    import shlex

    d = fake_daemon(daemon_factory, FAKE_AGENT_COST="0.25")
    repo = init_repo(tmp_path / "app")
    name = d.add_repo(repo)
    gate = tmp_path / "gate"
    lead = tmp_path / "lead.sh"
    lead.write_text(
        f'#!/bin/sh\nwhile [ ! -f "{gate}" ]; do sleep 0.05; done\n'
        f"exec {shlex.join(spawner('agent', 'claude'))}\n"
    )
    lead.chmod(0o755)
    t = create_team(d, name, str(lead), budget_usd=0.1)
    spend = d.api.post(
        f"/teams/{t['id']}/tasks", json={"title": "spend", "prompt": "spend", "agent": "claude"}
    ).json()["id"]
    wait_states(d, t["id"], {spend: "done"})
    assert team(d, t["id"])["cost_usd"] == pytest.approx(0.25)
    gate.touch()
    ended = d.wait(t["lead_job_id"], timeout=60)
    assert ended["state"] == "failed"
    log = d.api.get(f"/jobs/{ended['id']}/log").text
    assert (
        f"create_job failed: team {t['id']} is over budget: $0.2500 spent of $0.1000; "
        "its jobs create no jobs"
    ) in log
    assert children_of(d, ended["id"]) == []
