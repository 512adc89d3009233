"""The proof of issue 16 (docs/cluster.md, step 8): three daemons on one machine, each
with its own state dir and its own clone of one repo, one bare hub repository as the
shared remote, one PostgreSQL database: 300 jobs; ``kill -9`` of one daemon mid-run, and
its agents after it (its machine is gone). Every job ends once, succeeded; every result
branch is on the hub; no run of a job overlaps another; no worker holds a job it does
not run. (A cron tick fired by several nodes and one webhook sent to two nodes:
tests/test_cluster_events.py and tests/e2e/test_nodes.py.)"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixture import Daemon
from tests.e2e.test_postgres import FIRST_START_S
from tests.gitutil import git
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOBS = 300
NODES = "abc"
ENV = {
    "DISPATCHER_WORKER_HEARTBEAT_SECONDS": "0.3",
    "DISPATCHER_WORKER_TIMEOUT_SECONDS": "1.5",
    "DISPATCHER_MAX_PARALLEL": "4",
    "DISPATCHER_MAX_PARALLEL_PER_REPO": "12",
    "DISPATCHER_MAX_ATTEMPTS": "3",
    "DISPATCHER_RETRY_BACKOFF_SECONDS": "0",
    "DISPATCHER_POOL_SIZE": "0",
}


def _agent(tmp_path: Path, states: dict[str, Path]) -> str:
    """A trivial agent that writes its job id and, in a ledger outside every worktree,
    when it started and when it ended, on which node; on a node whose machine died
    (its ``dead-<node>`` file), it ends at once without a word, as if killed."""
    ledger, flags = tmp_path / "ledger", tmp_path / "flags"
    ledger.mkdir()
    flags.mkdir()
    cases = " ".join(f"{state}/*) node={n};;" for n, state in states.items())
    script = tmp_path / "agent.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$DISPATCHER_WORKTREE" in {cases} *) node=?;; esac\n'
        f'echo "start $DISPATCHER_JOB_ID $node $(date +%s.%N)" >> "{ledger}/runs"\n'
        "i=0\n"
        "while [ $i -lt 5 ]; do\n"
        f'  [ -f "{flags}/dead-$node" ] && kill -9 $$\n'
        "  sleep 0.02; i=$((i + 1))\n"
        "done\n"
        'echo "$DISPATCHER_JOB_ID" > out.txt\n'
        f'echo "end $DISPATCHER_JOB_ID $node $(date +%s.%N)" >> "{ledger}/runs"\n'
    )
    script.chmod(0o755)
    return str(script)


def _runs(tmp_path: Path) -> dict[int, list[tuple[str, str, float]]]:
    """Each job's ledger lines: (start|end, node, time), in order."""
    runs: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
    path = tmp_path / "ledger" / "runs"
    for line in path.read_text().splitlines() if path.exists() else []:
        what, job, node, at = line.split()
        runs[int(job)].append((what, node, float(at)))
    return runs


def test_three_nodes_run_300_jobs_and_lose_none_when_one_is_killed(
    pg_url: str, daemon_factory: Callable[..., Daemon], repo: Path, tmp_path: Path
) -> None:
    hub = tmp_path / "hub.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(hub))
    daemons = {n: daemon_factory(DISPATCHER_DATABASE_URL=pg_url, **ENV) for n in NODES}
    states = {n: d.state_dir for n, d in daemons.items()}
    command = [_agent(tmp_path, states)]
    for n, d in daemons.items():
        clone = tmp_path / f"clone-{n}"
        git(tmp_path, "clone", "-q", str(hub), str(clone))
        d.start(timeout=FIRST_START_S)
        resp = d.api.post("/repos", json={"path": str(clone), "name": "app", "hub": "origin"})
        assert resp.status_code == 201, resp.text
    a, b, c = daemons.values()
    workers = {n: next(w["id"] for w in d.api.get("/workers").json() if w["this"])
               for n, d in daemons.items()}  # fmt: skip

    # Queued through every node's API in turn, while they run.
    ids: list[int] = []

    def submit() -> None:
        for i in range(JOBS):
            body = {"repo": "app", "prompt": f"job {i}", "command": command}
            key = {"Idempotency-Key": f"job-{i}"}  # the database's: any node answers it
            for d in (daemons[NODES[i % 3]], a):  # C's API goes with C: then A's
                try:
                    resp = d.api.post("/jobs", json=body, headers=key)
                except httpx.TransportError:
                    continue
                assert resp.status_code in (200, 201), resp.text
                ids.append(resp.json()["id"])
                break

    submitting = threading.Thread(target=submit)
    submitting.start()

    # Kill C mid-run: once a third of the jobs ended, while C has agents running.
    def c_is_mid_run() -> bool:
        runs = _runs(tmp_path)
        ended = sum(1 for r in runs.values() if any(w == "end" for w, _, _ in r))
        running_on_c = [j for j, r in runs.items() if r[-1][:2] == ("start", "c")]
        return ended >= JOBS // 3 and len(running_on_c) >= 2

    try:
        wait_until(c_is_mid_run, "C to be running jobs a third of the way in", 240, interval=0.01)
        assert c.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.time()
        (tmp_path / "flags" / "dead-c").touch()  # its agents go with its machine
    finally:
        submitting.join(120)
    assert len(ids) == JOBS  # C's API went: the rest were queued through A and B

    done = wait_until(
        lambda: (jobs := a.api.get("/jobs", params={"limit": 500}).json()["items"])
        and all(j["state"] not in ("queued", "preparing", "running") for j in jobs)
        and jobs,
        "every job to end", 300, max_interval=0.5,
    )  # fmt: skip
    by_id = {j["id"]: j for j in done}
    assert sorted(by_id) == sorted(ids)
    failed = {i: (j["state"], j["error"]) for i, j in by_id.items() if j["state"] != "succeeded"}
    assert failed == {}

    # Every job ended once: the run its row records is one that ended, on a node alive
    # then; a run cut off with C never ended; no two runs of a job overlapped.
    runs = _runs(tmp_path)
    taken_over = []
    for job_id in ids:
        lines, row = runs[job_id], by_id[job_id]
        starts = [(node, at) for what, node, at in lines if what == "start"]
        ends = [(node, at) for what, node, at in lines if what == "end"]
        assert ends, (job_id, lines)
        if row["attempt"] > 1:
            taken_over.append(job_id)
            assert row["worker_id"] != workers["c"], row
        if len(starts) > 1:  # C's run, cut off, then one on a live node after the kill
            assert [node for node, _ in starts[:-1]] == ["c"] * (len(starts) - 1), lines
            assert starts[-1][0] != "c" and starts[-1][1] > killed_at, lines
            assert [node for node, _ in ends] in ([starts[-1][0]], ["c", starts[-1][0]]), lines
        else:
            assert len(ends) == 1, lines
    assert taken_over, "C held no running job when it was killed"

    # Every result branch is on the hub, at the job's head, with its work.
    hub_refs = dict(
        line.split()[::-1] for line in git(hub, "for-each-ref", "--format=%(objectname) %(refname)",
                                           "refs/heads/dispatcher/").splitlines()
    )  # fmt: skip
    for job_id in ids:
        row = by_id[job_id]
        assert row["hub_sha"], row
        assert hub_refs.get(f"refs/heads/{row['branch']}") == row["hub_sha"], row
    batch = "".join(f"{by_id[j]['hub_sha']}:out.txt\n" for j in ids)
    out = subprocess.run(
        ["git", "-C", str(hub), "cat-file", "--batch"], input=batch, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    # Each object prints as "<sha> blob <size>\n<content>\n": every job's out.txt is its id.
    assert [int(x) for x in out.splitlines()[1::3]] == ids, out[:500]

    # No worker holds a job it does not run: nothing busy, and the dead worker's
    # remaining rows are the jobs it finished before it died.
    for n in "ab":
        [row] = [w for w in daemons[n].api.get("/workers").json() if w["this"]]
        assert row["running"] == 0
    assert all(
        runs[j][-1][1] == "c" for j, row in by_id.items() if row["worker_id"] == workers["c"]
    )
    assert a.stop() == 0 and b.stop() == 0
