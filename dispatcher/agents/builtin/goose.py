"""goose (``goose run --instructions - --output-format stream-json``).

Checked against goose 1.37.0 (the ``@aaif/goose-binary-linux-x64`` binary): its
``run --help``, the strings of the binary, real runs, and the source of
https://github.com/aaif-goose/goose (``StreamEvent`` and ``process_agent_response`` in
``crates/goose-cli/src/session/mod.rs``, ``parse_run_input`` in
``crates/goose-cli/src/cli.rs``, the provider-error branch of ``Agent::reply`` in
``crates/goose/src/agents/agent.rs``). See ``docs/agents/goose.md``.

stdout holds a text banner, then one JSON event per line:

* banner ``● new session · <provider> <model>`` (or ``● resuming · ...``) -> ``model``;
  ``\\____)    <session id> · <dir>`` -> ``session_id`` (what ``--resume --session-id``
  takes). No JSON event carries either.
* ``{"type":"message","message":{id, role, content:[{type:"text", text}, ...]}}``:
  an assistant message's text items; streamed chunks share one ``id`` and are
  concatenated. The last assistant message with text -> summary.
* goose 1.37 turns a failed model call into an assistant message and exits 0:
  ``Ran into this error: <reason>.\\n\\nPlease retry if ...`` or ``<reason>\\n\\nPlease
  resend your message to try again.`` (a network error), or a ``systemNotification``
  content item of type ``creditsExhausted``. When the run ends on one of them ->
  ``is_error`` with ``<reason>``.
* ``{"type":"error","error":"..."}`` -> ``is_error``/``error`` (later goose versions
  print it for a failed run, then no ``complete``).
* ``{"type":"complete","total_tokens", "input_tokens", "output_tokens", "cost_usd"}``:
  the *session's* accumulated totals (a resumed session's include earlier runs);
  ``input_tokens``/``output_tokens`` -> tokens; ``cost_usd`` (printed by goose versions
  after 1.37; 1.37 prints none) -> ``cost_usd``.
* ``{"type":"notification",...}``: extension logs and progress, ignored.
* text lines ``error: <reason>`` (goose's own errors, on stdout: no provider, no model,
  no key, no such session) and ``Error: <reason>`` (on stderr) -> the failure, also
  when goose exits 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, builtin

PROFILE: Final = builtin(
    "goose",
    # `--instructions -`: only the prompt read from stdin takes `--system` along; with a
    # file path goose 1.37 drops `--system` silently (cli.rs `parse_run_input`).
    # No --no-session: the session is kept (under HOME) so that a follow-up resumes it.
    ["goose", "run", "--instructions", "-", "--output-format", "stream-json"],
    stdin_prompt=True,
    output="stream-json",
    description="goose `run`; the prompt on stdin as instructions; JSON events.",
    reports="goose",
    # No MCP: --with-streamable-http-extension takes a URL and no header (for the token);
    # its messages come in the prompt (docs/mcp-agents.md).
    mcp=None,
    resume_suffix=("--resume", "--session-id", SESSION_ID),
    system_prompt_flag="--system",
    env=(
        # Headless runs refuse to ask for tool approval: the approve modes fail the run.
        ("GOOSE_MODE", "auto"),
        # Else each new session costs one more model call to name it.
        ("GOOSE_DISABLE_SESSION_NAMING", "true"),
        ("GOOSE_TELEMETRY_OFF", "1"),
    ),
)

_BANNER_MODEL: Final = re.compile(r"●\s+(?:new session|resuming)\s+·\s+\S+\s+(\S.*?)\s*$")
_BANNER_SESSION: Final = re.compile(r"^\s*\\_+\)\s+(\S+)\s+·\s")
_ERROR_LINE: Final = re.compile(r"^\s*(?:error|Error):\s+(\S.*)$")
_RAN_INTO: Final = "Ran into this error:"
_RETRY_TAIL: Final = "Please retry if you think this is a transient or recoverable error."
_RESEND_TAIL: Final = "Please resend your message to try again."


def provider_error(text: str) -> str | None:
    """The reason in goose's message for a failed model call, or None for other text."""
    text = text.strip()
    if text.startswith(_RAN_INTO):
        reason = text[len(_RAN_INTO) :].removesuffix(_RETRY_TAIL).strip()
        return reason.removesuffix(".").strip() or text
    if text.endswith(_RESEND_TAIL):
        return text.removesuffix(_RESEND_TAIL).strip() or text
    return None


def _notification_error(content: object) -> str | None:
    for block in r.items(content):
        item = r.mapping(block)
        if item.get("type") == "systemNotification" and item.get("notificationType") == (
            "creditsExhausted"
        ):
            return r.string(item.get("msg")) or "goose: the provider's credits are exhausted"
    return None


class GooseParser(r.Parser):
    def __init__(self) -> None:
        self.message_id: str | None = None
        self.text: str | None = None
        self.model: str | None = None
        self.session_id: str | None = None
        self.error: str | None = None
        self.said: str | None = None  # goose's own "error:" line
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: float | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "message":
            self._message(r.mapping(event.get("message")))
        elif kind == "error":
            self.error = r.string(event.get("error")) or "goose reported an error"
        elif kind == "complete":
            self.input_tokens = r.integer(event.get("input_tokens"))
            self.output_tokens = r.integer(event.get("output_tokens"))
            self.cost_usd = r.number(event.get("cost_usd"))
        else:
            return kind == "notification"
        return True

    def feed_text(self, line: str) -> bool:
        line = r.ANSI_RE.sub("", line)
        if found := _BANNER_MODEL.search(line):
            self.model = found.group(1)
        elif found := _BANNER_SESSION.match(line):
            self.session_id = found.group(1)
        else:
            if found := _ERROR_LINE.match(line):
                self.said = found.group(1)  # not "known": the output stays readable as text
            return False
        return True

    def _message(self, message: Mapping[str, object]) -> None:
        if message.get("role") != "assistant":
            return
        content = message.get("content")
        if (notified := _notification_error(content)) is not None:
            self.text, self.message_id, self.error = notified, None, notified
            return
        texts = r.texts(content)
        if not texts:
            return
        message_id = r.string(message.get("id"))
        if message_id is not None and message_id == self.message_id and self.text is not None:
            self.text += "".join(texts)  # a streamed chunk of the same message
        else:
            self.text = "\n".join(texts)
            self.message_id = message_id
        self.error = provider_error(self.text)

    def report(self, tail: str | None) -> r.AgentReport:
        return r.AgentReport(
            summary=r.clip(self.text),
            is_error=self.error is not None,
            error=None if self.error is None else r.one_line(self.error),
            cost_usd=self.cost_usd,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            session_id=self.session_id,
            model=self.model,
        )

    def failure(self) -> str | None:
        return self.said


PARSER: Final = GooseParser
