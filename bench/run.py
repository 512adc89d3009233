"""Benchmarks: spawn latency and throughput, against a same-run `git worktree add` baseline.

    .venv/bin/python -m bench.run [--files 1000,10000] [--spawns 15] [--jobs 200] [--json out.json]

Builds deterministic synthetic repos in a temp dir, starts the real daemon
(`dispatcher serve`) on a free loopback port, and prints a table (and JSON).

* baseline: ``git worktree add -b B PATH main`` on the same repo, same run (p50/p95).
* spawn: POST /jobs answered -> the agent process running in its worktree. The
  agent writes ``time.time()`` of its own start; p50/p95 over ``--spawns`` jobs
  run one at a time.
* throughput: ``--jobs`` trivial jobs (``true``) queued at once with
  max-parallel 8; jobs/s from first POST to last terminal state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ENV_KEYS = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def make_repo(path: Path, files: int, commits: int = 20) -> Path:
    """``files`` files in 100-file directories, then ``commits`` small commits of history."""
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q", "-b", "main")
    for i in range(files):
        d = path / f"d{i // 100:04d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:06d}.txt").write_text(f"file {i}\n" + "x" * (i % 200) + "\n")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "initial")
    for c in range(commits):
        (path / "d0000" / "f000000.txt").write_text(f"rev {c}\n")
        sh(path, "git", "commit", "-qam", f"rev {c}")
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return ordered[idx]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(pct(values, 0.95) * 1000, 1),
        "n": len(values),
    }


def baseline_worktree_add(repo: Path, scratch: Path, i: int) -> float:
    target = scratch / f"wt{i}"
    t0 = time.perf_counter()
    sh(repo, "git", "worktree", "add", "-q", "-b", f"bench/{i}", str(target), "main")
    elapsed = time.perf_counter() - t0
    sh(repo, "git", "worktree", "remove", "--force", str(target))
    sh(repo, "git", "branch", "-q", "-D", f"bench/{i}")
    return elapsed


class Daemon:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.state = root / "state"
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "dispatcher"
        log = open(root / "daemon.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(self.port), "--state-dir", str(self.state)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"daemon did not start; see {root / 'daemon.log'}")
            time.sleep(0.05)
        token = (self.state / "token").read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"})

    def wait(self, job_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "timed_out", "canceled"):
                return job
            time.sleep(0.01)
        raise SystemExit(f"job {job_id} did not finish")

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)


AGENT = [sys.executable, "-S", "-c",
         "import os,time;open(os.path.join(os.environ['BENCH_MARKS'],"
         "os.environ['DISPATCHER_JOB_ID']),'w').write(repr(time.time()))"]  # fmt: skip


def bench_spawn(d: Daemon, repo_name: str, marks: Path) -> float:
    resp = d.http.post("/jobs", json={"repo": repo_name, "prompt": "bench", "command": AGENT})
    accepted = time.time()
    job = resp.json()
    d.wait(job["id"])
    started = float((marks / str(job["id"])).read_text())
    d.http.post(f"/jobs/{job['id']}/discard")
    return started - accepted


def bench_throughput(d: Daemon, repo_name: str, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ids = [
        d.http.post("/jobs", json={"repo": repo_name, "prompt": "t", "command": ["true"]}).json()[
            "id"
        ]
        for _ in range(n)
    ]
    for job_id in ids:
        d.wait(job_id)
    elapsed = time.perf_counter() - t0
    return {"jobs": n, "seconds": round(elapsed, 2), "jobs_per_s": round(n / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--files", default="1000,10000")
    parser.add_argument("--spawns", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    marks = root / "marks"
    marks.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCHER_", "GIT_"))}
    env.update({k: "bench" if "NAME" in k else "bench@example.com" for k in ENV_KEYS})
    env.update(
        HOME=str(root), BENCH_MARKS=str(marks), GIT_CONFIG_NOSYSTEM="1",
        DISPATCHER_MAX_PARALLEL="8", DISPATCHER_MAX_PARALLEL_PER_REPO="8",
    )  # fmt: skip
    os.environ.update({k: env[k] for k in (*ENV_KEYS, "GIT_CONFIG_NOSYSTEM", "HOME")})
    results: dict[str, Any] = {"git": sh(root, "git", "--version"), "cores": os.cpu_count()}
    d = Daemon(root, env)
    try:
        rows = []
        for count in (int(x) for x in args.files.split(",")):
            repo = make_repo(root / f"repo{count}", count)
            name = f"r{count}"
            d.http.post("/repos", json={"path": str(repo), "name": name}).raise_for_status()
            # Interleaved, so both see the same disk and page-cache state.
            base_t, spawn_t = [], []
            for i in range(args.spawns):
                base_t.append(baseline_worktree_add(repo, root / f"scratch{count}", i))
                spawn_t.append(bench_spawn(d, name, marks))
            base, spawn = summary(base_t), summary(spawn_t)
            ratio = round(base["p50_ms"] / spawn["p50_ms"], 2)
            rows.append({"files": count, "worktree_add": base, "spawn": spawn, "ratio_p50": ratio})
        results["spawn"] = rows
        tp_repo = make_repo(root / "tp", 100, commits=1)
        d.http.post("/repos", json={"path": str(tp_repo), "name": "tp"}).raise_for_status()
        results["throughput"] = bench_throughput(d, "tp", args.jobs)
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"{results['git']}, {results['cores']} cores")
    print(
        f"{'files':>7} | {'git worktree add p50/p95':>25} | {'spawn p50/p95':>18} | baseline/spawn"
    )
    for r in results["spawn"]:
        b, s = r["worktree_add"], r["spawn"]
        print(
            f"{r['files']:>7} | {b['p50_ms']:>11} / {b['p95_ms']:<11} | "
            f"{s['p50_ms']:>7} / {s['p95_ms']:<8} | {r['ratio_p50']}x"
        )
    tp = results["throughput"]
    print(f"throughput: {tp['jobs']} trivial jobs in {tp['seconds']} s = {tp['jobs_per_s']} jobs/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
