"""The dashboard's pages (/ui) at 100,000 jobs, beside the REST reads of the same data in
the same run: the board (page and its polled fragment) against ``GET /jobs?limit=50``,
a job page against ``GET /jobs/{id}``. Then the delay from an agent writing a log line
to the dashboard's log stream delivering it, beside ``dispatcher logs -f`` reading the
same lines of the same job at the same time.

The state dir is the api section's (100,000 finished jobs, made once per run). The page
requests carry the session cookie from a real login (``POST /ui/login``); one
connection, requests in turn (round robin), after a warm-up. The figures are
server-rendered HTML as the browser receives it (no browser: its own rendering time is
not the daemon's).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import api, repos
from bench.common import Ctx, ratio, summary, target
from bench.daemon import Daemon
from tests.daemonproc import dispatcher_argv

STAMP = re.compile(r"T=(\d+\.\d+)")
AGENT = """import sys, time, pathlib
print("ready", flush=True)
gate = pathlib.Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.02)
for i in range(int(sys.argv[2])):
    print(f"line {i} T={time.time():.6f}", flush=True)
    time.sleep(0.05)
"""

PAGES = ("GET /ui/ (board)", "GET /ui/board (fragment)", "GET /ui/jobs/{id}")
BASELINES = ("GET /jobs?limit=50", "GET /jobs/{id}")


def run(ctx: Ctx) -> dict[str, Any]:
    hist = api.prefilled(ctx)
    d = Daemon(ctx, "dashboard", state_dir=hist["state"], pool_size="0").start()
    d.settle(timeout=30, min_pause=1.0)
    n = int(ctx.options.get("requests") or (200 if ctx.quick else 1000))
    rng = random.Random(7)
    token = (d.state_dir / "token").read_text().strip()
    with httpx.Client(base_url=d.url, timeout=60) as ui:
        login = ui.post("/ui/login", data={"token": token})
        if login.status_code != 303:
            raise RuntimeError(f"login: {login.status_code} {login.text[:200]}")
        urls = {
            PAGES[0]: (ui, lambda: "/ui/"),
            PAGES[1]: (ui, lambda: "/ui/board"),
            PAGES[2]: (ui, lambda: f"/ui/jobs/{rng.randint(1, hist['jobs'])}"),
            BASELINES[0]: (d.http, lambda: "/jobs?limit=50"),
            BASELINES[1]: (d.http, lambda: f"/jobs/{rng.randint(1, hist['jobs'])}"),
        }
        times: dict[str, list[float]] = {name: [] for name in urls}
        for i in range(n + 10):
            for name, (client, url) in urls.items():
                t0 = time.perf_counter()
                resp = client.get(url())
                elapsed = time.perf_counter() - t0
                if resp.status_code != 200:
                    raise RuntimeError(f"{name}: {resp.status_code} {resp.text[:300]}")
                if i >= 10:  # the first rounds warm caches up
                    times[name].append(elapsed)
    d.stop()
    delays = log_delay(ctx, lines=50 if ctx.quick else 200)
    seq = {name: summary(t) for name, t in times.items()}
    board, job = seq[PAGES[0]]["p95_ms"], seq[PAGES[2]]["p95_ms"]
    return {
        "jobs_in_db": hist["jobs"],
        "sequential": seq,
        "ratios_p50": {
            "board page / GET /jobs?limit=50": ratio(
                seq[PAGES[0]]["p50_ms"], seq[BASELINES[0]]["p50_ms"]
            ),
            "board fragment / GET /jobs?limit=50": ratio(
                seq[PAGES[1]]["p50_ms"], seq[BASELINES[0]]["p50_ms"]
            ),
            "job page / GET /jobs/{id}": ratio(
                seq[PAGES[2]]["p50_ms"], seq[BASELINES[1]]["p50_ms"]
            ),
        },
        "log_delay": delays,
        "targets": [
            target(
                delays["dashboard"]["p50_ms"] <= 250,
                f"log line -> dashboard stream p50 <= 250 ms ({delays['dashboard']['p50_ms']} ms)",
            ),
            target(board <= 100, f"board page p95 <= 100 ms at 100,000 jobs ({board} ms)"),
            target(job <= 100, f"job page p95 <= 100 ms at 100,000 jobs ({job} ms)"),
        ],
    }


def table(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['jobs_in_db']:,} jobs in the database; one connection, in turn:",
        f"{'request':<28} | {'p50':>7} | {'p95':>7} | {'max':>7} | n",
    ]
    for name, s in r["sequential"].items():
        lines.append(
            f"{name:<28} | {s['p50_ms']:>7} | {s['p95_ms']:>7} | {s['max_ms']:>7} | {s['n']}"
        )
    lines += [f"{name}: x{value} (p50)" for name, value in r["ratios_p50"].items()]
    ld = r["log_delay"]
    lines.append("agent writes a log line -> the reader has it (one job, both at once):")
    for name in ("dashboard", "logs -f"):
        s = ld[name]
        lines.append(f"  {name:<10} p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, n {s['n']}")
    lines.append(f"  dashboard / logs -f: x{ld['ratio_p50']} (p50)")
    return lines


def log_delay(ctx: Ctx, *, lines: int) -> dict[str, Any]:
    """One job prints ``lines`` time-stamped lines (20 a second) once both readers are
    connected: the dashboard's SSE stream (with a session cookie) and ``logs -f``."""
    d = Daemon(ctx, "dashboard-log", pool_size="0").start()
    repo = repos.make_small_repo(ctx.root / "repos" / "dashboard-log", env=ctx.env)
    d.add_repo(repo, "log")
    script = ctx.root / "log-agent.py"
    script.write_text(AGENT)
    gate = ctx.root / "log-gate"
    job = d.submit("log", "print lines", [sys.executable, str(script), str(gate), str(lines)])
    token = (d.state_dir / "token").read_text().strip()
    got: dict[str, list[float]] = {"dashboard": [], "logs -f": []}
    ready = {"dashboard": threading.Event(), "logs -f": threading.Event()}

    def note(name: str, text: str) -> None:
        now = time.time()
        if "ready" in text:
            ready[name].set()
        got[name].extend(now - float(t) for t in STAMP.findall(text))

    def dashboard() -> None:
        with httpx.Client(base_url=d.url, timeout=120) as ui:
            ui.post("/ui/login", data={"token": token})
            with ui.stream("GET", f"/ui/jobs/{job['id']}/log") as resp:
                for text in resp.iter_lines():
                    note("dashboard", text)
                    if text.startswith("event: end"):
                        return

    def follow() -> None:
        env = {**d.env, "DISPATCHER_URL": d.url, "DISPATCHER_STATE_DIR": str(d.state_dir)}
        with subprocess.Popen(
            [*dispatcher_argv(), "logs", "-f", str(job["id"])],
            env=env, stdout=subprocess.PIPE, text=True,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            for text in proc.stdout:
                note("logs -f", text)

    readers = [threading.Thread(target=dashboard), threading.Thread(target=follow)]
    for t in readers:
        t.start()
    for event in ready.values():
        event.wait(60)
    Path(gate).touch()
    for t in readers:
        t.join(300)
    d.stop()
    out: dict[str, Any] = {name: summary(values) for name, values in got.items()}
    out["ratio_p50"] = ratio(out["dashboard"].get("p50_ms"), out["logs -f"].get("p50_ms"))
    return out
