"""OpenAI Codex CLI (``codex exec --json``).

Output sources: ``docs/exec.md`` and ``codex-rs/exec/src/exec_events.rs`` in
https://github.com/openai/codex (https://developers.openai.com/codex/noninteractive).

* ``thread.started``: ``thread_id`` -> ``session_id`` (what
  ``codex exec resume <id>`` takes).
* ``item.completed`` with ``item.type == "agent_message"``: ``item.text`` of
  the last one -> summary.
* ``turn.completed``: ``usage.input_tokens`` and ``usage.output_tokens`` summed
  over turns (``cached_input_tokens`` is part of ``input_tokens``); clears an
  earlier ``error`` (codex prints retried stream errors, ``Reconnecting...
  1/5``, as ``error`` events and then completes the turn; openai/codex#32984).
* ``turn.failed``: ``error.message`` -> ``is_error``/``error``.
* ``error``: ``message`` -> ``is_error``/``error`` unless a later
  ``turn.completed`` clears it.
* ``turns`` counts ``turn.completed`` and ``turn.failed``. Codex reports no
  cost and no model: both stay empty.
* Text lines (stderr) starting ``Error: `` (a bad ``-o`` path, a config error, a resume
  of a session that is not there: ``Error: thread/resume: ... no rollout found for
  thread id ...``) are the failure when no JSON event said why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, SUMMARY_FILE, builtin

_SANDBOX: Final = ("--sandbox", "workspace-write")
# Without it a job with no network never ends ("Reconnecting... waiting for network": the
# feature is on by default); with it codex gives up after its 5+5 retries (about 30 s).
_BOUNDED_RETRIES: Final = ("--disable", "unbounded_connection_retries")
_EXEC: Final = ("codex", "exec", "--json", *_SANDBOX, *_BOUNDED_RETRIES, "-o", SUMMARY_FILE)

PROFILE: Final = builtin(
    "codex",
    [*_EXEC, "-"],
    stdin_prompt=True,
    output="stream-json",
    description="OpenAI Codex CLI `exec`; `-` reads the prompt from stdin; JSONL events.",
    reports="codex",
    mcp="codex",  # the daemon's MCP server: docs/mcp-agents.md
    resume_argv=(*_EXEC, "resume", SESSION_ID, "-"),
    reads_agents_md=True,
    # As root in the daemon's box (no capabilities) Codex's own bwrap cannot map its
    # uid: every command the agent runs fails ("bwrap: setting up uid map: Operation not
    # permitted") and codex's output does not say so, so the job could succeed having
    # done nothing. Refused at start instead. Codex's read-only default uses the same
    # bwrap: only an override with danger-full-access (or Codex's bypass flag) runs.
    root_refusal=(
        "Codex's own sandbox (--sandbox workspace-write) cannot start inside the daemon's "
        "sandbox when the daemon runs as root: run the daemon as a normal user, or override "
        "codex with --sandbox danger-full-access (the daemon's sandbox still applies; "
        "docs/agents/codex.md)"
    ),
    root_refusal_unless_args=(
        "danger-full-access",
        "--sandbox=danger-full-access",
        "--dangerously-bypass-approvals-and-sandbox",
    ),
    root_refusal_boxed_only=True,
)


class CodexParser(r.Parser):
    _ITEM_EVENTS: Final = ("item.started", "item.updated", "item.completed")
    _OTHER_EVENTS: Final = ("turn.started", "item.plan.delta", "request_user_input")

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.message: str | None = None
        self.error: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.turns: int | None = None
        self.stderr_error: str | None = None
        self.saw_event = False

    def feed_text(self, line: str) -> bool:
        if line.startswith("Error: "):
            self.stderr_error = line.removeprefix("Error: ")
            return True
        return False

    def failure(self) -> str | None:
        return None if self.stderr_error is None else f"codex: {self.stderr_error}"

    def feed(self, event: Mapping[str, object]) -> bool:
        known = self._event(event)
        self.saw_event = self.saw_event or known
        return known

    def _event(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "thread.started":
            self.session_id = r.string(event.get("thread_id")) or self.session_id
        elif kind in self._ITEM_EVENTS:
            item = r.mapping(event.get("item"))
            text = item.get("text")
            final = kind == "item.completed" and item.get("type") == "agent_message"
            if final and isinstance(text, str) and text.strip():
                self.message = text
        elif kind == "turn.completed":
            usage = r.mapping(event.get("usage"))
            self.input_tokens = r.add(self.input_tokens, usage.get("input_tokens"))
            self.output_tokens = r.add(self.output_tokens, usage.get("output_tokens"))
            self.turns = (self.turns or 0) + 1
            self.error = None
        elif kind == "turn.failed":
            self.turns = (self.turns or 0) + 1
            message = r.string(r.mapping(event.get("error")).get("message"))
            self.error = message or "codex: turn failed"
        elif kind == "error":
            self.error = r.string(event.get("message")) or "codex reported an error"
        else:
            return kind in self._OTHER_EVENTS
        return True

    def report(self, tail: str | None) -> r.AgentReport:
        return r.AgentReport(
            summary=r.clip(self.message) if self.saw_event else tail,
            is_error=self.error is not None,
            error=None if self.error is None else r.one_line(self.error),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            turns=self.turns,
            session_id=self.session_id,
        )


PARSER: Final = CodexParser
