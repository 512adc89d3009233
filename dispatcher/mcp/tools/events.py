"""Tools of events and triggers: post an event, check a trigger file's text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from dispatcher.mcp.auth import principal
from dispatcher.store.models import EventCreate, IngestResult

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from dispatcher.service import Service


class TriggerCheck(BaseModel):
    """Whether a trigger file is valid, and each of its problems (``file:line: reason``)."""

    ok: bool
    problems: list[str]


def register(server: MCPServer[Any], service: Service) -> None:
    access = service.access

    @server.tool(
        description="Report an event (CI result, push, manual, ...) to a repo's triggers, "
        "as POST /events does; returns the triggers it matched and the jobs it made. "
        "Takes the daemon token."
    )
    def post_event(ctx: Context[Any, Any], event: EventCreate) -> IngestResult:
        access.admin(principal(ctx), "post events")
        return service.events.post(event)

    @server.tool(
        description="Check the text of a trigger file (.dispatcher/triggers.yml) without "
        "saving it anywhere: every problem with its line, or ok."
    )
    def check_trigger_file(
        text: Annotated[str, Field(max_length=1_000_000, description="The file's YAML text")],
        filename: Annotated[
            str, Field(min_length=1, description="The name used in the problems")
        ] = ".dispatcher/triggers.yml",
    ) -> TriggerCheck:
        problems = service.events.check_trigger_file(text, filename)
        return TriggerCheck(ok=not problems, problems=problems)
