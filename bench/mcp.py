"""An MCP tool call against the same REST call, in the same run on the same daemon.

One finished job; then, interleaved round by round so that load hits each arm alike:
``GET /jobs/{id}`` (httpx, one connection), the MCP tool ``show_job`` through the
SDK's own client (streamable HTTP, one client), and the same ``tools/call`` posted as
a bare JSON-RPC request with httpx (the server's share without the SDK client's).
Also the first MCP request of the daemon, which loads the SDK and builds the server
(docs/mcp.md: the server is loaded at the first request to /mcp).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench import repos
from bench.common import Ctx, summary
from bench.daemon import Daemon

ARMS = ("REST GET /jobs/{id}", "MCP show_job (SDK client)", "MCP tools/call (bare POST)")
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


def rounds(ctx: Ctx) -> int:
    return int(ctx.options.get("requests") or (200 if ctx.quick else 1000))


def _bare_call(http: httpx.Client, job_id: int, i: int) -> None:
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "show_job", "arguments": {"job_id": job_id}}}  # fmt: skip
    resp = http.post("/mcp", content=json.dumps(body), headers=MCP_HEADERS)
    answer = resp.json()
    if resp.status_code != 200 or answer.get("result", {}).get("isError", True):
        raise RuntimeError(f"tools/call: {resp.status_code} {resp.text[:300]}")


async def _measure(d: Daemon, token: str, job_id: int, n: int) -> dict[str, Any]:
    rest = d.http
    bare = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    t0 = time.perf_counter()
    _bare_call(bare, job_id, 0)  # the daemon's first /mcp request: the server is built
    first_ms = round((time.perf_counter() - t0) * 1000, 1)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    sdk_http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with sdk_http, Client(streamable_http_client(d.url + "/mcp", http_client=sdk_http)) as c:
        for i in range(n + 20):  # the first 20 rounds warm up
            t0 = time.perf_counter()
            rest.get(f"/jobs/{job_id}").raise_for_status()
            t1 = time.perf_counter()
            result = await c.call_tool("show_job", {"job_id": job_id})
            t2 = time.perf_counter()
            _bare_call(bare, job_id, i + 1)
            t3 = time.perf_counter()
            if result.is_error:
                raise RuntimeError(f"show_job: {result.content}")
            if i >= 20:
                for arm, took in zip(ARMS, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    times[arm].append(took)
    bare.close()
    out = {arm: summary(t) for arm, t in times.items()}
    base = out[ARMS[0]]["p50_ms"]
    for arm in ARMS:
        out[arm]["x_rest_p50"] = round(out[arm]["p50_ms"] / base, 2) if base else None
    return {"first_mcp_request_ms": first_ms, "arms": out}


def run(ctx: Ctx) -> dict[str, Any]:
    d = Daemon(ctx, "mcp", pool_size="0").start()
    repo = repos.make_small_repo(ctx.root / "repos" / "mcp", env=ctx.env)
    name = d.add_repo(repo, "mcp")
    job = d.wait(d.submit(name, "bench", ["true"])["id"])
    token = (d.state_dir / "token").read_text().strip()
    result = asyncio.run(_measure(d, token, int(job["id"]), rounds(ctx)))
    d.stop()
    return {"rounds": rounds(ctx), **result}


def table(r: dict[str, Any]) -> list[str]:
    lines = [
        f"first /mcp request (loads the SDK, builds the server): {r['first_mcp_request_ms']} ms",
        f"{'one call, interleaved, ' + str(r['rounds']) + ' rounds':<36} | {'p50':>7} | "
        f"{'p95':>7} | {'x REST p50':>10}",
    ]
    for arm, s in r["arms"].items():
        lines.append(f"{arm:<36} | {s['p50_ms']:>7} | {s['p95_ms']:>7} | {s['x_rest_p50']:>10}")
    return lines
