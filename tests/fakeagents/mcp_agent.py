"""A fake agent that uses the daemon's MCP server the way a real one would: the SDK's own
client, pointed at DISPATCHER_MCP_URL with DISPATCHER_JOB_TOKEN (what the runner gives
every agent). Run by the real runner as a job's command (tests/e2e/test_mcp.py).

It creates a child job in its own repo, waits for it, reads its log, merges it (into a
non-default branch), and tries what its scope refuses: merging into the default branch,
reading an unrelated job (argv[1]), a repo not its own (argv[2]), the REST API with
its token. It prints one line, ``MCP-RESULT <json>``, of what it saw; never its token.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def _text(result: Any) -> str:
    return str(result.content[0].text) if result.content else ""


async def main(unrelated: int, other_repo: str) -> dict[str, Any]:
    url, token = os.environ["DISPATCHER_MCP_URL"], os.environ["DISPATCHER_JOB_TOKEN"]
    seen: dict[str, Any] = {}
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        repos = (await client.call_tool("list_repos", {})).structured_content or {}
        seen["repos"] = [r["name"] for r in repos.get("result", [])]
        repo = seen["repos"][0]  # a job token's list: its own repo only
        made = await client.call_tool(
            "create_job",
            {
                "repo": repo,
                "prompt": "child",
                "command": ["sh", "-c", "echo child-says-hi; echo child > child.txt"],
            },
        )
        child = made.structured_content or {}
        seen["child"] = {k: child.get(k) for k in ("id", "parent_id", "base_ref", "target_branch")}
        deadline = time.monotonic() + 60
        while True:
            shown = (await client.call_tool("show_job", {"job_id": child["id"]})).structured_content
            assert shown is not None
            if (
                shown["state"] not in ("queued", "preparing", "running")
                or time.monotonic() > deadline
            ):
                break
            await asyncio.sleep(0.1)
        seen["child_state"] = shown["state"]
        log = await client.call_tool("job_log", {"job_id": child["id"]})
        seen["child_log_has_output"] = "child-says-hi" in (log.structured_content or {}).get(
            "text", ""
        )
        listed = (await client.call_tool("list_jobs", {})).structured_content or {}
        seen["listed"] = [j["id"] for j in listed.get("items", [])]
        refused = await client.call_tool("merge_job", {"job_id": child["id"], "into": "main"})
        seen["merge_default"] = [refused.is_error, _text(refused)]
        merged = await client.call_tool("merge_job", {"job_id": child["id"]})
        seen["merge_own_branch"] = [
            merged.is_error,
            (merged.structured_content or {}).get("job", {}).get("state") or _text(merged),
        ]
        other = await client.call_tool("show_job", {"job_id": unrelated})
        seen["show_unrelated"] = [other.is_error, _text(other)]
        elsewhere = await client.call_tool("create_job", {"repo": other_repo, "prompt": "x"})
        seen["create_elsewhere"] = [elsewhere.is_error, _text(elsewhere)]
        for key, name in (("list_elsewhere", other_repo), ("list_unknown", "no-such-repo")):
            listed_there = await client.call_tool("list_jobs", {"repo": name})
            seen[key] = [listed_there.is_error, _text(listed_there)]
        event = await client.call_tool("post_event", {"event": {"repo": repo, "kind": "manual"}})
        seen["post_event"] = [event.is_error, _text(event)]
    rest = httpx2.get(
        url.removesuffix("/mcp") + "/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    seen["rest"] = [rest.status_code, rest.json()["error"]["message"]]
    return seen


if __name__ == "__main__":
    result = asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
    print("MCP-RESULT " + json.dumps(result), flush=True)
