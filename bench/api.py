"""API latency with 100,000 jobs in the database, from a loopback load generator.

The database is made before the daemon starts: migrated to the newest schema
(:func:`dispatcher.store.database.migrate`), then one repo row and 100,000 finished
job rows bulk-inserted with ``sqlite3`` ``executemany`` in one transaction.
Columns are read from the table itself (``PRAGMA table_info``): every NOT
NULL column without a default gets a value, so a new migration does not break
the prefill. The same state dir serves the memory section.

Load: one connection, requests in turn (round robin over the endpoints), after
a warm-up; then 4 connections at once for requests/s under load.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import repos
from bench.common import Ctx, summary, target
from bench.daemon import Daemon

HISTORY_JOBS = 100_000
REPO = "history"
STATES = (
    ["succeeded"] * 8 + ["failed"] * 4 + ["discarded"] * 5 + ["merged"] * 2 + ["canceled"]
)  # fmt: skip
SQL_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite


def _filler(decl: str) -> Any:
    decl = decl.upper()
    if "INT" in decl or "BOOL" in decl:
        return 0
    if any(t in decl for t in ("REAL", "FLOA", "DOUB", "NUMERIC")):
        return 0.0
    if "DATE" in decl or "TIME" in decl:
        return datetime.now(UTC).strftime(SQL_TIME)
    if "JSON" in decl:
        return "{}"
    return ""


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, filling any other NOT NULL column that has no default."""
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    names = [c[1] for c in info]
    extra = {
        name: _filler(decl)
        for _, name, decl, notnull, default, pk in info
        if notnull and default is None and not pk and name not in rows[0]
    }
    cols = [n for n in names if n in rows[0] or n in extra]
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.executemany(sql, ([r.get(c, extra.get(c)) for c in cols] for r in rows))


def job_rows(repo_id: int, base_sha: str, n: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=60 * n)
    rows = []
    for i in range(n):
        job_id = i + 1
        state = STATES[i % len(STATES)]
        created = start + timedelta(seconds=60 * i)
        started = created + timedelta(seconds=2)
        finished = started + timedelta(seconds=30 + i % 600)
        closed = finished + timedelta(minutes=5) if state in ("discarded", "merged") else None
        rows.append(
            {
                "id": job_id,
                "repo_id": repo_id,
                "state": state,
                "prompt": f"history job {job_id}: fix the flaky test in module {i % 97}\n"
                + "Context line.\n" * (i % 5),
                "agent": "command",
                "command": '["true"]',
                "base_ref": "main",
                "base_sha": base_sha,
                "target_branch": "main",
                "timeout_s": 2700.0,
                "attempt": 1,
                "max_attempts": 1,
                "branch": f"dispatcher/{job_id}-history-job",
                "cancel_requested": 0,
                "exit_code": 0 if state != "failed" else 1,
                "head_sha": base_sha,
                "commits_ahead": i % 3,
                "files_changed": i % 7,
                "insertions": i % 50,
                "deletions": i % 20,
                "created_at": created.strftime(SQL_TIME),
                "claimed_at": created.strftime(SQL_TIME),
                "started_at": started.strftime(SQL_TIME),
                "finished_at": finished.strftime(SQL_TIME),
                "closed_at": closed.strftime(SQL_TIME) if closed else None,
            }
        )
    return rows


def prefilled(ctx: Ctx) -> dict[str, Any]:
    """The state dir with 100,000 jobs (made once per run)."""
    if "history" in ctx.cache:
        return dict(ctx.cache["history"])
    from dispatcher.store.database import migrate

    state = ctx.root / "daemons" / "history-state"
    state.mkdir(parents=True, mode=0o700)
    db = state / "dispatcher.db"
    t0 = time.perf_counter()
    migrate(f"sqlite:///{db}")
    repo = repos.make_small_repo(ctx.root / "repos" / REPO, env=ctx.env)
    head = ctx.git(repo, "rev-parse", "HEAD")
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        _insert(
            conn,
            "repo",
            [{"id": 1, "name": REPO, "path": str(repo), "default_branch": "main",
              "created_at": datetime.now(UTC).strftime(SQL_TIME)}],
        )  # fmt: skip
        # The repo's clone with no node: the daemon's first start takes it (adopt_clones).
        _insert(
            conn,
            "clone",
            [{"repo_id": 1, "node": None, "path": str(repo), "refs": "{}",
              "created_at": datetime.now(UTC).strftime(SQL_TIME)}],
        )  # fmt: skip
        _insert(conn, "job", job_rows(1, head, HISTORY_JOBS))
        conn.execute("COMMIT")
        count = conn.execute("SELECT count(*) FROM job").fetchone()[0]
    finally:
        conn.close()
    info = {"state": state, "jobs": count, "prefill_s": round(time.perf_counter() - t0, 2)}
    ctx.cache["history"] = info
    return dict(info)


def requests_count(ctx: Ctx) -> int:
    return int(ctx.options.get("requests") or (500 if ctx.quick else 2000))


def endpoints(rng: random.Random, n_jobs: int) -> dict[str, Any]:
    """name -> a function giving the next URL (random ids and pages, seeded)."""
    return {
        "GET /jobs?limit=50": lambda: "/jobs?limit=50",
        "GET /jobs/{id}": lambda: f"/jobs/{rng.randint(1, n_jobs)}",
        "GET /jobs?limit=50&before={id}": lambda: (
            f"/jobs?limit=50&before={rng.randint(51, n_jobs)}"
        ),
        "GET /jobs?state=failed&limit=50": lambda: "/jobs?state=failed&limit=50",
        f"GET /jobs?repo={REPO}&limit=50": lambda: f"/jobs?repo={REPO}&limit=50",
    }


KEY = ("GET /jobs?limit=50", "GET /jobs/{id}")


def measure(http: httpx.Client, urls: dict[str, Any], n: int) -> dict[str, list[float]]:
    """Round robin: the key endpoints ``n`` times, the others every fourth round."""
    out: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(n):
        for name, url in urls.items():
            if name not in KEY and i % 4:
                continue
            t0 = time.perf_counter()
            resp = http.get(url())
            out[name].append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise RuntimeError(f"{name}: {resp.status_code} {resp.text[:300]}")
    return out


def concurrent(d: Daemon, n_jobs: int, threads: int, per_thread: int) -> dict[str, Any]:
    times: list[float] = []
    lock = threading.Lock()
    token = (d.state_dir / "token").read_text().strip()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {token}"}) as h:
            for i in range(per_thread):
                url = "/jobs?limit=50" if i % 2 else f"/jobs/{rng.randint(1, n_jobs)}"
                t0 = time.perf_counter()
                h.get(url).raise_for_status()
                mine.append(time.perf_counter() - t0)
        with lock:
            times.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)
    wall = time.perf_counter() - t0
    return {
        "threads": threads,
        "requests": len(times),
        "req_per_s": round(len(times) / wall, 1),
        **summary(times, hi=0.99),
    }


def run(ctx: Ctx) -> dict[str, Any]:
    hist = prefilled(ctx)
    d = Daemon(ctx, "api", state_dir=hist["state"], pool_size="2").start()
    d.settle(timeout=30, min_pause=1.0)
    n = requests_count(ctx)
    urls = endpoints(random.Random(5), hist["jobs"])
    measure(d.http, urls, 20)  # warm-up
    seq = {name: summary(t, hi=0.99) for name, t in measure(d.http, urls, n).items()}
    load = concurrent(d, hist["jobs"], threads=4, per_thread=max(50, n // 4))
    d.stop()
    worst = max(seq[k]["p99_ms"] for k in KEY)
    return {
        "jobs_in_db": hist["jobs"],
        "prefill_s": hist["prefill_s"],
        "sequential": seq,
        "concurrent": load,
        "targets": [target(worst <= 20, f"API p99 <= 20 ms at 100,000 jobs ({worst} ms)")],
    }


def table(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['jobs_in_db']:,} jobs in the database (prefilled in {r['prefill_s']} s); "
        "one connection:",
        f"{'endpoint':<36} | {'p50':>7} | {'p99':>7} | {'max':>7} | n",
    ]
    for name, s in r["sequential"].items():
        lines.append(
            f"{name:<36} | {s['p50_ms']:>7} | {s['p99_ms']:>7} | {s['max_ms']:>7} | {s['n']}"
        )
    c = r["concurrent"]
    lines.append(
        f"{c['threads']} connections, GET /jobs?limit=50 and /jobs/{{id}} mixed: "
        f"{c['req_per_s']} req/s, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms"
    )
    return lines
