"""opencode (``opencode run --format json``).

Checked against opencode 1.18.33 (``opencode-ai`` on npm): its ``run --help``, the
``run`` command bundled in the binary, and real runs (see ``docs/agents/opencode.md``).
The prompt is read from stdin (``run`` reads stdin when it is not a terminal). Every
JSON line is ``{"type", "timestamp", "sessionID", ...}``; ``sessionID`` -> ``session_id``
(what ``--session`` takes); a new ``sessionID`` starts a new run (a log may hold several),
and so does a ``step_start`` after an ``error``.

* ``text``: ``part.text`` (a finished text part); the text parts of the last assistant
  message (``part.messageID``) -> summary.
* ``step_finish``: ``part.cost`` (USD) summed -> ``cost_usd``; ``part.tokens``:
  ``input + cache.read + cache.write`` summed -> ``input_tokens`` (all input, as for
  claude), ``output + reasoning`` summed -> ``output_tokens``; each one is a turn.
* ``error``: ``error.data.message`` (else ``error.name``) -> ``is_error``/``error``.
  For an ``UnknownError`` ("Unexpected server error. Check server logs ...") the reason
  is the ``error="..."`` of the log line with the same ``ref`` (``--print-logs
  --log-level ERROR`` puts it on stderr), e.g. ``ProviderModelNotFoundError: ...``.
* ``step_start``, ``tool_use``, ``reasoning``: known, not read.
* text ``Error: <reason>`` (stderr: no such session, a bad flag) -> the failure.

opencode prints no model in its JSON events: ``model`` stays empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from dispatcher.agents import report as r
from dispatcher.agents.spec import SESSION_ID, WORKDIR, builtin

PROFILE: Final = builtin(
    "opencode",
    [
        "opencode",
        "run",
        "--format",
        "json",
        # `run` works in $PWD when it is set, not in its cwd: the daemon's own PWD would
        # be inherited (opencode's run.ts: `process.env.PWD ?? process.cwd()`).
        "--dir",
        WORKDIR,
        # Approve what the config does not deny: without it `run` rejects every
        # permission request (it never waits), and the agent cannot edit or run tools.
        "--auto",
        # Errors (and only errors) of opencode's own log on stderr: the reason behind
        # an "Unexpected server error" lands in the job log.
        "--print-logs",
        "--log-level",
        "ERROR",
    ],
    stdin_prompt=True,
    output="stream-json",
    description="opencode `run`; prompt on stdin; JSON events.",
    reports="opencode",
    mcp="opencode",  # the daemon's MCP server: docs/mcp-agents.md
    resume_suffix=("--session", SESSION_ID),
    reads_agents_md=True,
    reports_cost=True,
    env=(("OPENCODE_DISABLE_AUTOUPDATE", "1"),),
)

_FAILED_LOG: Final = re.compile(r"\blevel=ERROR\b.*\bref=(\S+).*?\berror=\"((?:[^\"\\]|\\.)*)\"")
_LOG_LINE: Final = re.compile(r"^timestamp=\S+ level=[A-Z]+ ")
_ERROR_LINE: Final = re.compile(r"^\s*Error:\s+(\S.*)$")


class OpencodeParser(r.Parser):
    _OTHER_EVENTS: Final = ("step_start", "tool_use", "reasoning")

    def __init__(self) -> None:
        self._start(None)
        self.logged: dict[str, str] = {}  # ref -> the error opencode logged with it
        self.said: str | None = None

    def _start(self, session_id: str | None) -> None:
        """A new run: what an earlier one in the same log reported no longer counts."""
        self.session_id = session_id
        self.message_id: str | None = None
        self.text: str | None = None
        self.error: Mapping[str, object] | None = None
        self.cost_usd: float | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.turns: int | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        session_id = r.string(event.get("sessionID"))
        if session_id is not None and session_id != self.session_id:
            self._start(session_id)
        part = r.mapping(event.get("part"))
        if kind == "step_start" and self.error is not None:
            self.error = None  # the failed run ended; this one resumes its session
        if kind == "text":
            self._text(part)
        elif kind == "step_finish":
            self.cost_usd = r.add_cost(self.cost_usd, part.get("cost"))
            tokens = r.mapping(part.get("tokens"))
            cache = r.mapping(tokens.get("cache"))
            for value in (tokens.get("input"), cache.get("read"), cache.get("write")):
                self.input_tokens = r.add(self.input_tokens, value)
            for value in (tokens.get("output"), tokens.get("reasoning")):
                self.output_tokens = r.add(self.output_tokens, value)
            self.turns = (self.turns or 0) + 1
        elif kind == "error":
            self.error = r.mapping(event.get("error"))
        else:
            return kind in self._OTHER_EVENTS
        return True

    def _text(self, part: Mapping[str, object]) -> None:
        text = r.string(part.get("text"))
        if text is None or not text.strip():
            return
        message_id = r.string(part.get("messageID"))
        if message_id is not None and message_id == self.message_id and self.text is not None:
            self.text += "\n" + text  # another text part of the same message
        else:
            self.text, self.message_id = text, message_id

    def feed_text(self, line: str) -> bool:
        line = r.ANSI_RE.sub("", line)
        if found := _FAILED_LOG.search(line):
            self.logged[found.group(1)] = found.group(2).replace('\\"', '"')
            return True
        if _LOG_LINE.match(line):
            return True
        if found := _ERROR_LINE.match(line):
            self.said = found.group(1)  # not "known": the output stays readable as text
        return False

    def _reason(self, error: Mapping[str, object]) -> str:
        data = r.mapping(error.get("data"))
        ref = r.string(data.get("ref"))
        if ref is not None and ref in self.logged:
            return self.logged[ref]
        name = r.string(error.get("name"))
        return r.string(data.get("message")) or name or "opencode reported an error"

    def report(self, tail: str | None) -> r.AgentReport:
        error = None if self.error is None else r.one_line(self._reason(self.error))
        return r.AgentReport(
            summary=r.clip(self.text),
            is_error=error is not None,
            error=error,
            cost_usd=self.cost_usd,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            turns=self.turns,
            session_id=self.session_id,
        )

    def failure(self) -> str | None:
        return self.said


PARSER: Final = OpencodeParser
