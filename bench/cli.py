"""Benchmarks of the real daemon, each figure next to a same-run baseline.

    .venv/bin/python -m bench [--quick] [--only SECTION,...] [--json out.json]

Sections (in this order): repos, spawn, throughput, events, api, memory, merge,
repos_api, repos_scale, burst, supervise, git_processes, teams, mcp, dashboard, cluster. Everything
lives in one temp dir, removed at the end with every daemon the run started stopped
(SIGTERM), even on failure or Ctrl-C. ``--quick`` uses the 1,000 and 10,000-file repos only, 200
throughput jobs and fewer samples (a few minutes on 2 cores); the full run adds the
50,000-file repo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import (
    api,
    burst,
    cluster,
    dashboard,
    events,
    git_processes,
    mcp,
    memory,
    merge,
    repos,
    repos_api,
    repos_scale,
    spawn,
    supervise,
    teams,
    throughput,
)
from bench.common import Ctx, git_version, verdict, wait_for_quiet_machine

SECTIONS: dict[str, ModuleType] = {
    "repos": repos,
    "spawn": spawn,
    "throughput": throughput,
    "events": events,
    "api": api,
    "memory": memory,
    "merge": merge,
    "repos_api": repos_api,
    "repos_scale": repos_scale,
    "burst": burst,
    "supervise": supervise,
    "git_processes": git_processes,
    "teams": teams,
    "mcp": mcp,
    "dashboard": dashboard,
    "cluster": cluster,
}

TITLES = {
    "repos": "synthetic repos",
    "spawn": "spawn latency: POST /jobs answered -> agent running in its worktree",
    "throughput": "throughput: trivial jobs, max-parallel 8",
    "events": "event -> job: commit on main -> job queued by a push trigger",
    "api": "API latency at 100,000 jobs (loopback)",
    "memory": "daemon memory",
    "merge": "merge conflict pre-check",
    "repos_api": "GET /repos and finding a worktree, 300 retained 1,000-file trees",
    "repos_scale": "threads and restart at 1, 50 and 200 registered repos",
    "burst": "a burst of 10 jobs past the warm pool of 2: cold checkouts",
    "supervise": "threads and idle CPU with 1 and 8 agents running",
    "git_processes": "git processes per trivial job, warm pool of 2",
    "teams": "teams: blocker merged -> dependant's agent start; message send -> waiting read",
    "mcp": "an MCP tool call (show_job) against the same REST call (GET /jobs/{id})",
    "dashboard": "dashboard pages (/ui) at 100,000 jobs against the REST reads",
    "cluster": "PostgreSQL: claim of a job queued elsewhere, jobs/s, take-over after kill -9",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small repos, fewer samples")
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--files", help="repo sizes for repos/spawn, e.g. 1000,10000")
    p.add_argument("--spawns", type=int, help="samples per size and arm (spawn)")
    p.add_argument("--jobs", type=int, help="trivial jobs (throughput)")
    p.add_argument("--commits", type=int, help="commits on main (events)")
    p.add_argument("--requests", type=int, help="requests per key endpoint (api)")
    p.add_argument(
        "--quiet-wait", type=float, default=60,
        help="before each section, wait up to this many s for idle CPUs (default 60)",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temp dir (for debugging)")
    args = p.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(SECTIONS)
        if unknown:
            p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwind: the exit stack stops the daemons


def print_section(name: str, result: dict[str, Any], out: Callable[[str], None]) -> None:
    load = result.get("loadavg_1min", [])
    idle = result.get("machine_before", {}).get("cpu_idle")
    out(
        f"\n== {name}: {TITLES[name]} ({result.get('elapsed_s')} s; CPUs idle before: {idle}; "
        f"load {load[0]} -> {load[1]})"
    )
    if "error" in result:
        out(f"   FAILED: {result['error']}")
        return
    for line in SECTIONS[name].table(result):
        out("   " + line)
    for t in result.get("targets", []):
        out(f"   target: {t['target']}: {verdict(t)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, Any] = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_version(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "sections": {},
    }
    print(f"{results['git']}, Python {results['python']}, {results['cores']} cores", flush=True)
    failed = False
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        ctx = Ctx.create(stack, quick=args.quick, keep=args.keep)
        if args.keep:
            print(f"temp dir (kept): {ctx.root}")
        ctx.options.update(
            files=[int(x) for x in args.files.split(",")] if args.files else None,
            spawns=args.spawns, jobs=args.jobs, commits=args.commits, requests=args.requests,
        )  # fmt: skip
        for name in (n for n in SECTIONS if n in chosen):
            machine = wait_for_quiet_machine(args.quiet_wait) if args.quiet_wait else {}
            t0 = time.perf_counter()
            load0 = os.getloadavg()[0]
            try:
                # A section's daemons are stopped when it ends (a nested stack).
                with contextlib.ExitStack() as section_stack:
                    ctx.stack = section_stack
                    result = SECTIONS[name].run(ctx)
            except Exception as exc:
                failed = True
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            finally:
                ctx.stack = stack
            result["elapsed_s"] = round(time.perf_counter() - t0, 1)
            result["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            result["machine_before"] = machine
            results["sections"][name] = result
            print_section(name, result, print)
            sys.stdout.flush()
    results["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    targets = [t for r in results["sections"].values() for t in r.get("targets", [])]
    results["targets"] = targets
    print(f"\n== targets ({results['elapsed_s']} s in all)")
    for t in targets:
        print(f"   {verdict(t):>7}  {t['target']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"JSON: {args.json}")
    return 1 if failed else 0
