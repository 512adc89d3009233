"""Claude Code (``claude -p --output-format stream-json --verbose``).

Output sources: the Agent SDK's message types ``SDKSystemMessage`` and
``SDKResultMessage`` (https://docs.claude.com/en/docs/agent-sdk/typescript), which
the CLI prints one per line (https://docs.claude.com/en/docs/claude-code/headless).

* ``{"type":"system","subtype":"init"}``: ``session_id``, ``model``.
* ``{"type":"assistant","message":{...}}``: text blocks of ``message.content``
  (the summary if no ``result`` event arrives), ``message.model`` if init gave
  none.
* ``{"type":"result"}`` (last one wins): ``result`` -> summary;
  ``is_error`` true *or* a ``subtype`` starting with ``error`` (``error_max_turns``,
  ``error_during_execution``, ``error_max_budget_usd``, ...) -> ``is_error``,
  with ``error`` taken from ``result``, else ``errors`` (a list of strings on
  the error subtypes), else the subtype; ``total_cost_usd`` -> ``cost_usd``;
  ``num_turns`` -> ``turns``; ``session_id``; ``usage.output_tokens`` ->
  ``output_tokens``; ``usage.input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens`` -> ``input_tokens`` (Claude counts cached input
  apart; the sum makes ``input_tokens`` mean all input, as for codex and gemini).

As root, Claude Code (2.1.332) exits 1 at once on any bypass flag ("--dangerously-skip-
permissions cannot be used with root/sudo privileges for security reasons") unless
``IS_SANDBOX=1`` (or ``CLAUDE_CODE_BUBBLEWRAP``) is set: ``root_refusal`` fails the job at
start instead, and ``root_opt_in`` is the user's way to let it run
(docs/agents/claude.md). With no login it prints a ``result`` with ``is_error`` and
``result`` "Not logged in · Please run /login", and exits 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, builtin

ROOT_OPT_IN: Final = "IS_SANDBOX=1"
"""Claude Code's own switch: with it, bypass mode runs as root (its source: the refusal
is skipped when ``IS_SANDBOX`` is ``1`` or ``CLAUDE_CODE_BUBBLEWRAP`` is set, checked
with 2.1.332 as root: ``IS_SANDBOX=yes`` is refused, ``CLAUDE_CODE_BUBBLEWRAP=1`` runs)."""

PROFILE: Final = builtin(
    "claude",
    [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",  # required by --print with --output-format stream-json
        "--permission-mode",
        "bypassPermissions",
    ],
    stdin_prompt=True,
    output="stream-json",
    description="Claude Code in print mode; prompt on stdin; JSON events on stdout.",
    reports="claude",
    mcp="claude",  # the daemon's MCP server: docs/mcp-agents.md
    resume_suffix=("--resume", SESSION_ID),
    system_prompt_flag="--append-system-prompt",
    budget_flag="--max-budget-usd",
    reports_cost=True,
    root_refusal=(
        "Claude Code refuses bypassPermissions as root: run the daemon as a normal user, "
        f"or start it with {ROOT_OPT_IN} to let Claude run as root in the daemon's "
        "sandbox (docs/agents/claude.md)"
    ),
    root_refusal_args=(
        "bypassPermissions",
        "--permission-mode=bypassPermissions",
        "--dangerously-skip-permissions",
        "--allow-dangerously-skip-permissions",
    ),
    root_opt_in=(ROOT_OPT_IN, "CLAUDE_CODE_BUBBLEWRAP"),
)


class ClaudeParser(r.Parser):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.last_text: str | None = None
        self.result: Mapping[str, object] | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "system":
            if event.get("subtype") == "init":
                self.session_id = r.string(event.get("session_id")) or self.session_id
                self.model = r.string(event.get("model")) or self.model
            else:
                self.session_id = self.session_id or r.string(event.get("session_id"))
            return True
        if kind == "assistant":
            message = r.mapping(event.get("message"))
            self.model = self.model or r.string(message.get("model"))
            self.session_id = self.session_id or r.string(event.get("session_id"))
            texts = [t for t in r.texts(message.get("content")) if t.strip()]
            if texts:
                self.last_text = "\n".join(texts)
            return True
        if kind == "result":
            self.result = event
            return True
        return kind in ("user", "stream_event")

    def report(self, tail: str | None) -> r.AgentReport:
        result = self.result
        if result is None:
            return r.AgentReport(
                summary=r.clip(self.last_text), session_id=self.session_id, model=self.model
            )
        text = r.string(result.get("result"))
        subtype = r.string(result.get("subtype"))
        is_error = result.get("is_error") is True or bool(subtype and subtype.startswith("error"))
        error = None
        if is_error:
            errors = [e for e in r.items(result.get("errors")) if isinstance(e, str) and e.strip()]
            named = subtype if subtype and subtype != "success" else "an error"
            reason = text or "; ".join(errors) or f"claude reported {named}"
            error = r.one_line(reason)
        usage = r.mapping(result.get("usage"))
        input_tokens = None
        for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            input_tokens = r.add(input_tokens, usage.get(field))
        return r.AgentReport(
            summary=r.clip(text or self.last_text),
            is_error=is_error,
            error=error,
            cost_usd=r.number(result.get("total_cost_usd")),
            input_tokens=input_tokens,
            output_tokens=r.integer(usage.get("output_tokens")),
            turns=r.integer(result.get("num_turns")),
            session_id=r.string(result.get("session_id")) or self.session_id,
            model=self.model,
        )


PARSER: Final = ClaudeParser
