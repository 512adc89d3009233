"""Gemini CLI (``gemini --output-format stream-json``).

Output sources: the headless reference (https://geminicli.com/docs/cli/headless/,
``docs/cli/headless.md``) and ``packages/core/src/output/types.ts`` and
``packages/cli/src/nonInteractiveCli.ts`` in https://github.com/google-gemini/gemini-cli.

* ``init``: ``session_id``, ``model``.
* ``message`` with ``role == "assistant"``: ``content`` chunks (``delta: true``)
  are concatenated. A ``tool_use`` or ``tool_result`` ends a block of text and a
  ``user`` message starts over, so the summary is the last block of assistant
  text: the answer after the last tool call, not the narration before it.
* ``error`` with ``severity == "error"``: its ``message`` is the error text if
  the run fails; without a ``result`` event it also sets ``is_error``.
  ``severity == "warning"`` is ignored.
* ``result`` (last one wins): ``status == "error"`` -> ``is_error``, with
  ``error.message`` (or the last ``error`` event) as ``error``;
  ``stats.input_tokens``, ``stats.output_tokens``. No cost or turn count is
  reported.

Text on stderr (no event is printed for these; checked against 0.61.0,
``packages/cli/src/validateNonInterActiveAuth.ts``, ``utils/userStartupWarnings.ts``
and ``gemini.tsx``): ``Please set an Auth method ...`` (no key or login, exit 41),
``Gemini CLI is not running in a trusted directory ...`` (exit 55, only once auth
passed; the profile's ``--skip-trust`` prevents it) and ``Error resuming session:
...`` (exit 42) fail the job with that line even if no event was printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, builtin

PROFILE: Final = builtin(
    "gemini",
    [
        "gemini",
        # Folder trust is on by default: in a new worktree (untrusted) headless mode
        # exits 55 and yolo falls back to "default". This trusts it for this run only.
        "--skip-trust",
        "--output-format",
        "stream-json",
        "--approval-mode",
        "yolo",
    ],
    stdin_prompt=True,
    output="stream-json",
    description="Gemini CLI headless (stdin is not a TTY); prompt on stdin; JSONL events.",
    reports="gemini",
    mcp="gemini",  # the daemon's MCP server: docs/mcp-agents.md
    # Sessions are kept per project directory under ~/.gemini/tmp/<project>/chats; a
    # follow-up runs in the same worktree, and --resume takes the init event's UUID.
    resume_suffix=("--resume", SESSION_ID),
)

FATAL_TEXT: Final = (
    r"^Please set an Auth method\b",
    r"\bnot running in a trusted directory\b",
    r"^Error resuming session:",
)
"""stderr lines that end the run before any event (see the module's docstring)."""


class GeminiParser(r.Parser):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.blocks: list[str] = []
        self.open = False
        """Whether the next assistant delta continues ``blocks[-1]``."""
        self.error_event: str | None = None
        self.result: Mapping[str, object] | None = None
        self.fatal = r.TextFailures(*FATAL_TEXT)

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "init":
            self.session_id = r.string(event.get("session_id")) or self.session_id
            self.model = r.string(event.get("model")) or self.model
        elif kind == "message":
            self._message(event)
        elif kind in ("tool_use", "tool_result"):
            self.open = False
        elif kind == "error":
            if event.get("severity") == "error":
                self.error_event = r.string(event.get("message")) or "gemini reported an error"
        elif kind == "result":
            self.result = event
        else:
            return False
        return True

    def feed_text(self, line: str) -> bool:
        return self.fatal.feed(line)

    def failure(self) -> str | None:
        return self.fatal.found

    def _message(self, event: Mapping[str, object]) -> None:
        role = event.get("role")
        content = event.get("content")
        if role == "user":
            self.blocks, self.open = [], False
        elif role == "assistant" and isinstance(content, str):
            if event.get("delta") is True and self.open:
                self.blocks[-1] += content
            else:
                self.blocks.append(content)
            # A complete (non-delta) message is a block of its own.
            self.open = event.get("delta") is True

    def report(self, tail: str | None) -> r.AgentReport:
        summary = next((b for b in reversed(self.blocks) if b.strip()), None)
        result = self.result
        if result is None:
            failed = self.error_event is not None
            return r.AgentReport(
                summary=r.clip(summary),
                is_error=failed,
                error=r.one_line(self.error_event) if self.error_event else None,
                session_id=self.session_id,
                model=self.model,
            )
        is_error = result.get("status") == "error"
        error = None
        if is_error:
            message = r.string(r.mapping(result.get("error")).get("message"))
            error = r.one_line(message or self.error_event or "gemini reported status error")
        stats = r.mapping(result.get("stats"))
        return r.AgentReport(
            summary=r.clip(summary),
            is_error=is_error,
            error=error,
            input_tokens=r.integer(stats.get("input_tokens")),
            output_tokens=r.integer(stats.get("output_tokens")),
            session_id=self.session_id,
            model=self.model,
        )


PARSER: Final = GeminiParser
