"""The MCP tools, one module per resource, each with ``register(server, service)``.

A tool reads its principal (:func:`dispatcher.mcp.auth.principal`), asks
:class:`dispatcher.service.access.Access` whether it may, and calls the very
use-case the REST route calls (dispatcher/api/routes/); it decides nothing itself.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_ID = 2**63 - 1  # SQLite INTEGER: larger ids cannot exist
JobId = Annotated[int, Field(ge=1, le=MAX_ID, description="The job's id (an integer)")]
RepoName = Annotated[str, Field(min_length=1, description="A registered repo's name")]
