"""The MCP face: the daemon's use-cases as Model Context Protocol tools and resources.

One more thin face over :mod:`dispatcher.service`, beside the REST API (docs/mcp.md):
:mod:`.server` builds the server (the official ``mcp`` SDK) and its streamable HTTP
endpoint at ``/mcp``; :mod:`.auth` turns each request's bearer token into a principal;
:mod:`.tools` holds the tools, grouped by resource, and :mod:`.resources` a job's log
and diff.
"""
