"""Cluster (issue 16, docs/cluster.md): a daemon on a real PostgreSQL (tests/pg.py:
``initdb`` + ``pg_ctl`` in the run's temp dir), each figure beside a same-run baseline.

* **claim latency of a job queued on another node**: a job row inserted through a store
  of its own (as another node's API inserts it), until this daemon has claimed it
  (``claimed_at - created_at``). Woken by the trigger's ``NOTIFY`` (migration 0024),
  against the same with the trigger disabled: the claim poll (a second at most) finds
  it. The arms are interleaved, each job run to its end before the next.
* **take-over after kill -9**: node A runs a job that sleeps; A is killed (``kill -9``,
  its agent with it: its machine is gone); node B (its own state dir and clone of the
  repo, one bare hub as their shared remote) starts once A's heartbeat has gone stale
  (``DISPATCHER_WORKER_TIMEOUT_SECONDS`` 3): the seconds from the kill to the job
  running again on B, against B's start alone (start to ``/health``) and the timeout.
* **jobs/s**: trivial jobs (``true``) on SQLite (one daemon, the embedded default), then
  on PostgreSQL with 1, 2 and 3 nodes (daemons with their own state dirs and clones of
  one hub, max-parallel 8 each) on a fresh database each; the jobs are asked of the nodes'
  APIs in turn, at once, and the rate is the count over the time from the first request
  to the last job's ``finished_at`` (every job must succeed). The baselines are SQLite's
  and one node's of the same run. On one machine the nodes share its cores: this
  measures what coordination costs and whether nodes add anything here, not what more
  machines add.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import repos
from bench.common import Ctx, target
from bench.daemon import Daemon
from tests.pg import PgCluster, start_cluster
from tests.waiting import wait_until

PARALLEL = 8
TIMEOUT_S = 3.0  # the take-over arm's worker timeout


def samples(ctx: Ctx) -> int:
    return 10 if ctx.quick else 30


def jobs_count(ctx: Ctx) -> int:
    return int(ctx.options.get("jobs") or (100 if ctx.quick else 300))


def _pg(ctx: Ctx) -> PgCluster:
    """A PostgreSQL of the run's own, stopped and removed at the end (in the system's temp
    dir: the run's own is private to root, and the server runs as ``postgres``)."""
    cluster = start_cluster()
    ctx.stack.callback(shutil.rmtree, cluster.root, ignore_errors=True)
    ctx.stack.callback(cluster.stop)
    return cluster


def _hub_and_clones(ctx: Ctx) -> tuple[Path, Path, Path]:
    """A small repo's bare hub and two clones of it (two nodes' checkouts)."""
    root = ctx.dir("cluster-repos")
    seed = root / "seed"
    repos.make_repo(seed, 100, commits=1, env=ctx.env)
    hub = root / "hub.git"
    ctx.git(root, "clone", "-q", "--bare", str(seed), str(hub))
    clones = []
    for name in ("a", "b"):
        ctx.git(root, "clone", "-q", str(hub), str(root / name))
        clones.append(root / name)
    return hub, clones[0], clones[1]


def _remote_job(store: Any, template: Any) -> int:
    """A job like ``template`` (a row the daemon made), inserted by another store."""
    from dispatcher.jobs.naming import branch_name
    from dispatcher.store.models import Job

    job = Job(
        repo_id=template.repo_id, prompt="queued elsewhere", agent=template.agent,
        command=template.command, profile=template.profile, base_ref=template.base_ref,
        base_sha=template.base_sha, target_branch=template.target_branch,
        timeout_s=template.timeout_s, max_attempts=template.max_attempts,
    )  # fmt: skip
    made = store.add_job(job, branch_for=lambda jid: branch_name(jid, job.prompt))
    return int(made.id)


def claim_latency(ctx: Ctx, cluster: PgCluster, clone: Path) -> dict[str, Any]:
    from dispatcher.store.database import Store

    url = cluster.url(cluster.create_database())
    d = Daemon(ctx, "cluster-claim", database_url=url).start(timeout=120)
    name = d.add_repo(clone, "app")
    first = d.wait(int(d.submit(name, "template", ["true"])["id"]))
    other = Store(url)  # another node's store: no clone, it only inserts
    try:
        template = other.job(int(first["id"]))
        times: dict[str, list[float]] = {"notify": [], "poll": []}
        for i in range(samples(ctx) * 2):
            arm = "notify" if i % 2 == 0 else "poll"
            state = "ENABLE" if arm == "notify" else "DISABLE"
            with other.connecting() as conn:
                conn.exec_driver_sql(f"ALTER TABLE job {state} TRIGGER job_queued_notify")
            job_id = _remote_job(other, template)
            done = d.wait(job_id, timeout=60)
            row = other.job(job_id)
            if row.claimed_at is None:
                raise RuntimeError(f"job {job_id} was never claimed: {done['state']}")
            times[arm].append((row.claimed_at - row.created_at).total_seconds())
        with other.connecting() as conn:
            conn.exec_driver_sql("ALTER TABLE job ENABLE TRIGGER job_queued_notify")
    finally:
        other.close()
        d.stop()
    return {arm: _ms(values) for arm, values in times.items()}


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(values) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


def _rate(ctx: Ctx, hub: Path, label: str, count: int, database_url: str | None) -> float:
    """Trivial jobs/s of ``count`` nodes on one database (SQLite: one daemon), each with a
    fresh clone of ``hub`` (a job's branch is named by its id: another arm's would be in
    the way): the jobs asked of their APIs in turn, at once; the count over the time from
    the first request to the last job's ``finished_at``. Every job must succeed."""
    n = jobs_count(ctx)
    root = ctx.dir(f"cluster-{label}")
    extra = {"database_url": database_url} if database_url else {}
    nodes = []
    for i in range(count):
        clone = root / f"clone-{i}"
        ctx.git(root, "clone", "-q", str(hub), str(clone))
        d = Daemon(
            ctx, f"cluster-{label}-{i}", max_parallel=str(PARALLEL),
            max_parallel_per_repo=str(PARALLEL * 3), pool_size="2", **extra,
        ).start(timeout=120)  # fmt: skip
        d.add_repo(clone, "app")
        nodes.append(d)
    for d in nodes:
        d.settle(timeout=60, min_pause=1.0)
    t0 = time.time()
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: nodes[i % count].submit("app", f"t{i}", ["true"]), range(n)))
    ends = [nodes[0].wait(int(job["id"]), timeout=max(120.0, n * 0.5)) for job in made]
    bad = [e for e in ends if e["state"] != "succeeded"]
    if bad:
        first = f"{bad[0]['state']}: {bad[0].get('error')}"
        raise RuntimeError(f"{label}: {len(bad)} of {n} jobs did not succeed, the first {first}")
    last = max(datetime.fromisoformat(e["finished_at"]).timestamp() for e in ends)
    for d in nodes:
        d.stop()
    return round(n / (last - t0), 1)


def jobs_per_second(ctx: Ctx, cluster: PgCluster, hub: Path) -> dict[str, float]:
    """Trivial jobs/s on SQLite (one daemon), then on PostgreSQL with 1, 2 and 3 nodes
    (a fresh database each)."""
    out = {"sqlite": _rate(ctx, hub, "tp-sqlite", 1, None)}
    for count in (1, 2, 3):
        url = cluster.url(cluster.create_database())
        out[f"pg_{count}"] = _rate(ctx, hub, f"tp-pg-{count}", count, url)
    return out


def take_over(ctx: Ctx, cluster: PgCluster, clone_a: Path, clone_b: Path) -> dict[str, float]:
    url = cluster.url(cluster.create_database())
    settings = {
        "database_url": url, "worker_heartbeat_seconds": "0.5",
        "worker_timeout_seconds": str(TIMEOUT_S), "max_attempts": "2",
        "retry_backoff_seconds": "0",
    }  # fmt: skip
    a = Daemon(ctx, "cluster-a", **settings).start(timeout=120)
    name = a.add_repo(clone_a, "app")
    # It sleeps on node A; on any other node it is done at once.
    script = f'case "$DISPATCHER_WORKTREE" in {a.state_dir}/*) exec sleep 600;; esac'
    job_id = int(a.submit(name, "long", ["sh", "-c", script])["id"])
    job = wait_until(
        lambda: (j := a.http.get(f"/jobs/{job_id}").json())["state"] == "running" and j,
        "the job to run on node A", 60,
    )  # fmt: skip
    killed = time.time()
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(job["pid"]), signal.SIGKILL)  # its machine, agent and all, is gone
    b = Daemon(ctx, "cluster-b", **settings)
    _wait_dead(url)  # A's heartbeat gone stale: B's start then takes its job over
    t0 = time.perf_counter()
    b.start(timeout=120)
    started_s = time.perf_counter() - t0
    b.add_repo(clone_b, "app")
    again = b.wait(job_id, timeout=120)
    ended = datetime.fromisoformat(again["finished_at"]).timestamp()
    b.stop()
    if again["state"] != "succeeded" or again["attempt"] != 2:
        raise RuntimeError(f"job {job_id} after take-over: {again['state']}, {again['attempt']}")
    return {
        "kill_to_done_s": round(ended - killed, 2),
        "start_s": round(started_s, 2),
        "timeout_s": TIMEOUT_S,
    }


def _wait_dead(url: str) -> None:
    from datetime import timedelta

    from dispatcher.store.database import Store
    from dispatcher.store.workers import WorkerStore

    store = Store(url)
    try:
        rows = WorkerStore(store)
        wait_until(
            lambda: not any(
                w.alive for w in rows.listed(this=None, timeout=timedelta(seconds=TIMEOUT_S))
            ),
            "node A's heartbeat to go stale", 60, interval=0.05,
        )  # fmt: skip
    finally:
        store.close()


def run(ctx: Ctx) -> dict[str, Any]:
    cluster = _pg(ctx)
    hub, clone_a, clone_b = _hub_and_clones(ctx)
    claims = claim_latency(ctx, cluster, clone_a)
    rates = jobs_per_second(ctx, cluster, hub)
    taken = take_over(ctx, cluster, clone_a, clone_b)
    subprocess.run(["sync"], check=False)
    notify, poll = claims["notify"]["p50_ms"], claims["poll"]["p50_ms"]
    return {
        "claim_latency": claims,
        "jobs_per_s": rates,
        "take_over": taken,
        "targets": [
            target(
                notify * 5 <= poll,
                f"claim of a job queued elsewhere, woken: p50 {notify} ms, "
                f"at least 5x under the poll's {poll} ms",
            ),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    c, j, t = r["claim_latency"], r["jobs_per_s"], r["take_over"]
    return [
        "claim latency of a job queued on another node (created -> claimed), p50 / p95:",
        f"  woken by NOTIFY: {c['notify']['p50_ms']} / {c['notify']['p95_ms']} ms; "
        f"by the claim poll (trigger disabled): {c['poll']['p50_ms']} / {c['poll']['p95_ms']} ms",
        f"trivial jobs/s, max-parallel {PARALLEL} a node: SQLite (one daemon) {j['sqlite']}; "
        f"PostgreSQL with 1 node {j['pg_1']}, 2 nodes {j['pg_2']} "
        f"({j['pg_2'] / j['pg_1']:.2f}x), 3 nodes {j['pg_3']} ({j['pg_3'] / j['pg_1']:.2f}x) "
        "(one machine's cores shared)",
        f"take-over after kill -9: {t['kill_to_done_s']} s from the kill to the job done on "
        f"another node (its start alone {t['start_s']} s, worker timeout {t['timeout_s']} s, "
        "waited out before it starts)",
    ]
