"""Qwen Code (``qwen --output-format stream-json``), a fork of Gemini CLI.

Its stream-json output is not Gemini's: it prints Claude Code's SDK messages, one
per line. Checked against 0.24.4 (``packages/cli/src/nonInteractive/io/
BaseJsonOutputAdapter.ts`` and ``StreamJsonOutputAdapter.ts``,
``nonInteractive/nonInteractiveHelpers.ts``, ``validateNonInterActiveAuth.ts`` and
``config/config.ts`` in https://github.com/QwenLM/qwen-code):

* ``{"type":"system","subtype":"init"}``: ``session_id``, ``model``.
* ``{"type":"assistant","message":{...}}``: the text blocks of ``message.content``
  (the summary when no ``result`` event arrives), ``message.model``.
* ``user`` and ``stream_event`` messages are known and skipped (these events are read
  by Claude Code's parser, which Qwen's extends).
* ``{"type":"result"}`` (last one wins): ``result`` -> summary; ``is_error`` true
  (or a ``subtype`` starting with ``error``: ``error_during_execution`` is the one
  it prints) -> ``is_error``, with ``error.message`` as ``error``
  (how it reports no auth type, a discontinued Qwen OAuth and a connection error);
  ``num_turns`` -> ``turns``; ``session_id``; ``usage.input_tokens`` (all prompt
  tokens, the cached ones included, as Gemini counts them) and
  ``usage.output_tokens``. No cost is reported.

Text on stderr, printed with no ``result`` event: ``No saved session found with ID
...`` (a resume of a session that is not in ``~/.qwen/projects/<project>/chats``,
exit 1), ``Reached max session turns ...`` (a ``maxSessionTurns`` setting, exit 53)
and the no-auth message when the output is not JSON fail the job with that line.
"""

from __future__ import annotations

from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.builtin.claude import ClaudeParser
from dispatcher.agents.spec import SESSION_ID, builtin

PROFILE: Final = builtin(
    "qwen",
    # Headless when stdin is not a TTY; the prompt is read from stdin. Folder trust is
    # off by default here (unlike Gemini CLI) and there is no flag to skip it.
    ["qwen", "--output-format", "stream-json", "--approval-mode", "yolo"],
    stdin_prompt=True,
    output="stream-json",
    description="Qwen Code headless (stdin is not a TTY); prompt on stdin; JSONL events.",
    reports="qwen",
    mcp="qwen",  # the daemon's MCP server: docs/mcp-agents.md
    # Sessions are kept per project directory under ~/.qwen/projects/<project>/chats.
    resume_suffix=("--resume", SESSION_ID),
    system_prompt_flag="--append-system-prompt",
    reads_agents_md=True,  # QWEN.md and AGENTS.md are its default context files
)

FATAL_TEXT: Final = (
    r"^No saved session found with ID\b",
    r"^No auth type is selected\b",
    r"^Reached max session turns\b",
)
"""stderr lines that end the run before any event (see the module's docstring)."""


class QwenParser(ClaudeParser):
    """Claude Code's messages, read as :class:`ClaudeParser` reads them; the result's
    error and token counts are Qwen's own (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.fatal = r.TextFailures(*FATAL_TEXT)

    def feed_text(self, line: str) -> bool:
        return self.fatal.feed(line)

    def failure(self) -> str | None:
        return self.fatal.found

    def report(self, tail: str | None) -> r.AgentReport:
        result = self.result or {}
        subtype = r.string(result.get("subtype")) or ""
        is_error = result.get("is_error") is True or subtype.startswith("error")
        text = r.string(result.get("result"))
        error = None
        if is_error:
            message = r.string(r.mapping(result.get("error")).get("message"))
            error = r.one_line(message or text or f"qwen reported {subtype or 'an error'}")
        usage = r.mapping(result.get("usage"))
        return r.AgentReport(
            summary=r.clip(text or self.last_text),
            is_error=is_error,
            error=error,
            input_tokens=r.integer(usage.get("input_tokens")),
            output_tokens=r.integer(usage.get("output_tokens")),
            turns=r.integer(result.get("num_turns")),
            session_id=r.string(result.get("session_id")) or self.session_id,
            model=self.model,
        )


PARSER: Final = QwenParser
