"""Cline CLI (``cline --json``, one task, then exit).

Checked against ``cline`` 3.0.65 (the SDK-based CLI; ``@cline/cli-linux-x64`` is one
Bun executable): ``cline --help`` and the JavaScript inside the executable (``runCli``,
the run loop that prints ``run_result``, and the JSON writers of agent events).

The prompt: cline reads piped stdin (a pipe or a regular file) as the task and puts it
after the prompt argument, if any. With ``--json`` it refuses to start without a prompt
*argument* ("JSON output mode requires a prompt argument or piped stdin", although it
checks only the argument), so the profile passes a fixed lead-in sentence, never the
job's prompt: the task cline runs is ``<lead-in>\\n\\n<prompt file>``.

With ``--json`` every line is one JSON object with a ``ts`` and a ``type``. Read here:

* ``run_result`` (last one wins): ``finishReason`` other than ``completed`` ->
  ``is_error``, with ``text`` (the failure's message) as ``error``; on success ``text``
  (the final answer) -> summary; ``aggregateUsage`` (or ``usage``): ``inputTokens``
  ``+ cacheReadTokens + cacheWriteTokens`` -> ``input_tokens`` (all input),
  ``outputTokens``, ``totalCost`` (USD, from the model's prices) -> ``cost_usd``;
  ``iterations`` -> ``turns``; ``model.id`` -> ``model``.
* ``agent_event`` with ``event.type == "error"``: ``event.error.message`` -> ``error``
  when no ``run_result`` names one; ``event.type == "done"``: ``text`` -> summary when
  no ``run_result`` arrives.
* ``run_aborted``: ``message`` -> ``is_error``/``error``.
* ``{"type":"error","message":...}`` (on stderr: a bad flag, the failure repeated):
  ``is_error``/``error`` when no ``run_result`` came.

No session id is printed (``hook_event`` lines carry an agent and a task id only), and
``--id`` resumes only in the interactive TUI: follow-ups start a new task. ``-s`` would
*replace* cline's own system prompt, so it is not the system-prompt flag; cline reads
the repo's ``AGENTS.md`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import builtin

LEAD_IN: Final = "Do the task described below."
"""The prompt argument ``--json`` requires; the job's prompt follows it on stdin."""

PROFILE: Final = builtin(
    "cline",
    ["cline", "--json", "--auto-approve", "true", LEAD_IN],
    stdin_prompt=True,
    output="stream-json",
    description="Cline CLI, one task in act mode; prompt on stdin; JSON lines.",
    reports="cline",
    mcp="cline",  # the daemon's MCP server: docs/mcp-agents.md
    reads_agents_md=True,
    reports_cost=True,
    env=(
        # No detached hub daemon that outlives the job: run the session in-process.
        ("CLINE_SESSION_BACKEND_MODE", "local"),
        ("CLINE_NO_AUTO_UPDATE", "1"),  # no flag; else it installs updates at start
    ),
)


class ClineParser(r.Parser):
    def __init__(self) -> None:
        self.result: Mapping[str, object] | None = None
        self.done_text: str | None = None
        self.error: str | None = None
        self.aborted: str | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "run_result":
            self.result = event
        elif kind == "agent_event":
            inner = r.mapping(event.get("event"))
            if inner.get("type") == "error":
                message = r.string(r.mapping(inner.get("error")).get("message"))
                self.error = message or self.error or "cline reported an error"
            elif inner.get("type") == "done":
                self.done_text = r.string(inner.get("text")) or self.done_text
        elif kind == "run_aborted":
            self.aborted = r.string(event.get("message")) or "cline run aborted"
        elif kind == "error":
            self.error = r.string(event.get("message")) or self.error or "cline reported an error"
        else:
            return kind == "hook_event"
        return True

    def report(self, tail: str | None) -> r.AgentReport:
        result = self.result
        if result is None:
            failure = self.aborted or self.error
            return r.AgentReport(
                summary=r.clip(self.done_text),
                is_error=failure is not None,
                error=r.one_line(failure) if failure else None,
            )
        text = r.string(result.get("text"))
        finish = r.string(result.get("finishReason"))
        is_error = finish != "completed" or self.aborted is not None
        error = None
        if is_error:
            error = r.one_line(
                self.aborted or text or self.error or f"cline finished with {finish or 'no reason'}"
            )
        usage = r.mapping(result.get("aggregateUsage")) or r.mapping(result.get("usage"))
        return r.AgentReport(
            summary=None if is_error else r.clip(text or self.done_text),
            is_error=is_error,
            error=error,
            cost_usd=r.number(usage.get("totalCost")),
            input_tokens=r.add_all(usage, "inputTokens", "cacheReadTokens", "cacheWriteTokens"),
            output_tokens=r.integer(usage.get("outputTokens")),
            turns=r.integer(result.get("iterations")),
            model=r.string(r.mapping(result.get("model")).get("id")),
        )


PARSER: Final = ClineParser
