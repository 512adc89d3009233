"""``dispatcher mcp``: the daemon's MCP server over stdio, for clients that start their
servers themselves (docs/mcp.md, "The stdio command").

It is a relay, not a second server: each message goes to the running daemon's ``/mcp``
and each answer comes back, so there is one tool set, one scope check and one place
that runs use-cases (the daemon), and the command holds no state of its own. It finds
the daemon as every command does (DISPATCHER_URL, else the settings' host and port)
with the CLI's token; inside a job, DISPATCHER_MCP_URL and DISPATCHER_JOB_TOKEN (what
the runner gives every agent) come first, so an agent's stdio server is scoped to its job;
inside a job (DISPATCHER_JOB_ID) with no job token it refuses rather than fall back to the
person's token.
"""

from __future__ import annotations

import os

from dispatcher.cli.client import Client, read_token, relay_mcp_stdio
from dispatcher.cli.commands import app
from dispatcher.config import MCP_PATH, Settings
from dispatcher.errors import InvalidInput


@app.command("mcp")
def mcp_stdio() -> None:
    """Serve the daemon's MCP tools on stdin/stdout (relayed to its /mcp endpoint)."""
    settings = Settings()
    base = (settings.url or settings.api_url).rstrip("/")
    url = os.environ.get("DISPATCHER_MCP_URL") or base + MCP_PATH
    token = os.environ.get("DISPATCHER_JOB_TOKEN")
    if token is None:
        job = os.environ.get("DISPATCHER_JOB_ID")
        if job is not None:  # inside a job: its token or nothing, never the person's
            raise InvalidInput(
                f"inside job {job} with no DISPATCHER_JOB_TOKEN (the MCP client did not pass "
                "it on, or MCP is off for agents): refusing to use the daemon token"
            )
        token = read_token(settings)
    with Client(url.removesuffix(MCP_PATH), None, timeout=5) as client:
        client.get("/health")  # one line now (no daemon there) rather than a silent client
    relay_mcp_stdio(url, token)
