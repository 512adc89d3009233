"""GitHub Copilot CLI (``copilot --output-format json``, prompt mode).

Checked against ``@github/copilot`` 1.0.102: ``copilot --help``, ``copilot help
environment`` and the bundled ``cli-main.js`` and ``schemas/session-events.schema.json``
(the package unpacks them into ``~/.cache/copilot/pkg/<platform>/<version>/``).

With stdin not a terminal and no ``-p``, copilot runs one prompt read from stdin and
exits (prompt mode). ``--output-format json`` prints the session's events, one JSON
object per line (``{"type", "id", "timestamp", "parentId", "data", ...}``; many, e.g.
``assistant.usage`` and ``session.shutdown``, are left out of the stream), then a
``result`` line of its own. Read here:

* ``session.start``/``session.resume``: ``data.sessionId``, ``data.selectedModel``.
* ``session.model_change``: ``data.newModel``.
* ``assistant.message`` (not a sub-agent's: no ``data.parentToolCallId``): the last
  non-empty ``data.content`` -> summary; ``data.model``; ``data.outputTokens`` summed
  -> ``output_tokens``. Input tokens are only in ``assistant.usage``, which the stream
  leaves out: ``input_tokens`` stays empty.
* ``assistant.turn_end`` (not a sub-agent's) counted -> ``turns``.
* ``session.task_complete``: ``data.summary`` -> summary when no message had text.
* ``session.error`` (not ``errorType`` ``model_call``/``hook``, which copilot retries
  or reports as a warning) and ``session.warning`` of type ``policy_blocked`` or
  ``compaction_static_context_blocked``: ``data.message`` -> ``error``: these make
  copilot exit 1.
* ``result`` (last one wins): ``sessionId``; ``exitCode`` other than 0 ->
  ``is_error``. Its ``usage`` counts premium requests, not USD: no cost is reported.

Failures before the session starts (no login, a token it cannot check with no
network, an unknown ``--resume`` id, a bad flag) are plain text on stderr, not JSON:
``Error: <reason>``, sometimes followed by an indented detail line. The first such
line (and its detail) is the failure (:meth:`CopilotParser.failure`), unless a
``result`` with ``exitCode`` 0 says the session ended well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, builtin

PROFILE: Final = builtin(
    "copilot",
    [
        "copilot",
        "--output-format",
        "json",
        "--allow-all-tools",  # required in prompt mode: no permission prompt can be answered
        "--no-ask-user",  # no ask_user tool: it works on without asking questions
        "--no-auto-update",  # run the installed version; never download another
        "--disable-client-telemetry",
        "--stream",
        "off",  # whole assistant.message events, no per-token deltas in the log
    ],
    stdin_prompt=True,
    output="stream-json",
    description="GitHub Copilot CLI in prompt mode; prompt on stdin; JSONL session events.",
    reports="copilot",
    mcp="copilot",  # the daemon's MCP server: docs/mcp-agents.md
    resume_suffix=(f"--resume={SESSION_ID}",),
    reads_agents_md=True,
)

_FAILING_WARNINGS: Final = frozenset({"policy_blocked", "compaction_static_context_blocked"})
_RETRIED_ERRORS: Final = frozenset({"model_call", "hook"})


class CopilotParser(r.Parser):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.message: str | None = None
        self.task_summary: str | None = None
        self.output_tokens: int | None = None
        self.turns: int | None = None
        self.error: str | None = None
        self.result: Mapping[str, object] | None = None
        self.text_error: str | None = None
        self.detail_open = False
        """Whether an indented line may still add detail to ``text_error``."""

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = r.string(event.get("type"))
        if kind is None:
            return False
        data = r.mapping(event.get("data"))
        own = data.get("parentToolCallId") is None  # not a sub-agent's event
        if kind in ("session.start", "session.resume"):
            self.session_id = r.string(data.get("sessionId")) or self.session_id
            self.model = r.string(data.get("selectedModel")) or self.model
        elif kind == "session.model_change":
            self.model = r.string(data.get("newModel")) or self.model
        elif kind == "assistant.message" and own:
            text = r.string(data.get("content"))
            if text and text.strip():
                self.message = text
            self.model = r.string(data.get("model")) or self.model
            self.output_tokens = r.add(self.output_tokens, data.get("outputTokens"))
        elif kind == "assistant.turn_end" and own:
            self.turns = (self.turns or 0) + 1
        elif kind == "session.task_complete":
            self.task_summary = r.string(data.get("summary")) or self.task_summary
        elif kind == "session.error":
            if data.get("errorType") not in _RETRIED_ERRORS:
                self.error = r.string(data.get("message")) or "copilot reported an error"
        elif kind == "session.warning":
            if data.get("warningType") in _FAILING_WARNINGS:
                self.error = r.string(data.get("message")) or "copilot was blocked"
        elif kind == "result":
            self.result = event
            self.session_id = r.string(event.get("sessionId")) or self.session_id
        else:
            # Every other session event (tool.*, user.message, session.info, ...).
            return "." in kind
        return True

    def feed_text(self, line: str) -> bool:
        text = r.ANSI_RE.sub("", line)
        if text.startswith("Error: "):
            if self.text_error is None:
                self.text_error = text[len("Error: ") :].strip()
                self.detail_open = True
            return True
        if self.detail_open and text.strip():
            self.detail_open = False
            if text[:1].isspace() and not text.lstrip().startswith("•"):
                self.text_error = f"{self.text_error} ({text.strip()})"
                return True
        return False

    def failure(self) -> str | None:
        result = self.result
        if result is not None and r.integer(result.get("exitCode")) == 0:
            return None  # the session ran and ended well: a stray error line is not its outcome
        return self.text_error

    def report(self, tail: str | None) -> r.AgentReport:
        result = self.result
        code = r.integer(result.get("exitCode")) if result is not None else None
        is_error = self.error is not None if result is None else code not in (None, 0)
        error = None
        if is_error:
            error = r.one_line(self.error or self.text_error or f"copilot exited with code {code}")
        return r.AgentReport(
            summary=r.clip(self.message or self.task_summary),
            is_error=is_error,
            error=error,
            output_tokens=self.output_tokens,
            turns=self.turns,
            session_id=self.session_id,
            model=self.model,
        )


PARSER: Final = CopilotParser
