"""The MCP face: the daemon's use-cases as Model Context Protocol tools and resources.

One more thin face over :mod:`dispatcher.service`, beside the REST API (docs/mcp.md):
:mod:`.endpoint` is ``/mcp`` on the daemon's app, which builds the server at its first
request; :mod:`.server` builds it (the official ``mcp`` SDK) with its streamable HTTP
app; :mod:`.auth` hands each tool its request's principal; :mod:`.tools` holds the
tools, grouped by resource, and :mod:`.resources` a job's log and diff. A new group of
tools is a module of :mod:`.tools` with ``register(server, service)``, added to
:func:`.server.build`'s list.
"""
