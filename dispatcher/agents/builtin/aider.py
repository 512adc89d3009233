"""aider (``aider --message-file F --yes-always``): one message, then exit.

aider prints text, not events: its output's tail is the summary.
"""

from __future__ import annotations

from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import PROMPT_FILE, builtin

PROFILE: Final = builtin(
    "aider",
    [
        "aider",
        f"--message-file={PROMPT_FILE}",
        "--yes-always",
        "--no-auto-commits",  # the daemon commits what the agent leaves behind
        "--no-check-update",
        "--no-pretty",
        "--no-analytics",
    ],
    stdin_prompt=False,
    output="text",
    description="aider, one message from the prompt file, then exit.",
)

PARSER: Final[type[r.Parser] | None] = None
