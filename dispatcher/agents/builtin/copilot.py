"""copilot: a placeholder profile, to be checked against the real CLI (issue 12)."""

from __future__ import annotations

from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import builtin

PROFILE: Final = builtin(
    "copilot",
    ["copilot"],
    stdin_prompt=True,
    output="text",
    description="copilot (placeholder).",
)

PARSER: Final[type[r.Parser] | None] = None
