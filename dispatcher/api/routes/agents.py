"""The agent profiles a job can name, found on the daemon's PATH or not."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from dispatcher.api.deps import ServiceDep
from dispatcher.store.models import AgentPublic

router = APIRouter(tags=["agents"])


@router.get(
    "/agents",
    summary="Every agent profile: found on PATH or not, version, what it can do",
    description=(
        "Built-in profiles first, then configured ones. With `repo`, as that repo's jobs "
        "would run them (its trigger file's `agents:` overrides apply). `blocked` says why "
        "a job with the agent would fail at start now (Claude Code as root, say)."
    ),
)
def list_agents(
    service: ServiceDep, repo: Annotated[str | None, Query(max_length=200)] = None
) -> list[AgentPublic]:
    return service.agents.list(repo)
