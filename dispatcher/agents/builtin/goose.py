"""goose (``goose run --output-format stream-json``).

No documentation page describes the events; this follows goose's source: the
``StreamEvent`` enum and ``process_agent_response`` in
``crates/goose-cli/src/session/mod.rs`` and the ``Message`` type in
``crates/goose/src/conversation/message.rs`` (https://github.com/block/goose;
``stream-json`` came with block/goose#6228).

* ``{"type":"message","message":{id, role, content:[{type:"text", text}, ...]}}``:
  an assistant message's text items; streamed chunks share one ``id`` and are
  concatenated. The last assistant message with text -> summary.
* ``{"type":"model_change","model":...}`` -> ``model``.
* ``{"type":"error","error":"..."}`` -> ``is_error``/``error``. goose still
  prints ``complete`` after it, so ``complete`` does not clear it.
* ``{"type":"complete","total_tokens":N}``: goose reports only a total, which
  has no field here; ``input_tokens``/``output_tokens`` are read if present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import PROMPT_FILE, builtin

PROFILE: Final = builtin(
    "goose",
    [
        "goose",
        "run",
        f"--instructions={PROMPT_FILE}",
        "--no-session",
        "--output-format",
        "stream-json",
    ],
    stdin_prompt=False,
    output="stream-json",
    description="goose `run` with the prompt file as instructions; JSON events.",
    reports="goose",
)


class GooseParser(r.Parser):
    def __init__(self) -> None:
        self.message_id: str | None = None
        self.text: str | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "message":
            self._message(r.mapping(event.get("message")))
        elif kind == "model_change":
            self.model = r.string(event.get("model")) or self.model
        elif kind == "error":
            self.error = r.string(event.get("error")) or "goose reported an error"
        elif kind == "complete":
            self.input_tokens = r.integer(event.get("input_tokens"))
            self.output_tokens = r.integer(event.get("output_tokens"))
        else:
            return kind == "notification"
        return True

    def _message(self, message: Mapping[str, object]) -> None:
        if message.get("role") != "assistant":
            return
        texts = r.texts(message.get("content"))
        if not texts:
            return
        message_id = r.string(message.get("id"))
        if message_id is not None and message_id == self.message_id and self.text is not None:
            self.text += "".join(texts)  # a streamed chunk of the same message
        else:
            self.text = "\n".join(texts)
            self.message_id = message_id

    def report(self, tail: str | None) -> r.AgentReport:
        return r.AgentReport(
            summary=r.clip(self.text),
            is_error=self.error is not None,
            error=None if self.error is None else r.one_line(self.error),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            model=self.model,
        )


PARSER: Final = GooseParser
