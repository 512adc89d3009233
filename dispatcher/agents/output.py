"""What an agent printed, read back from its job log: final message, error, cost, tokens, session.

A job's log holds the agent's stdout and stderr, interleaved with lines the
daemon writes itself, which start with ``[dispatcher] `` and are skipped here.
:func:`parse_lines` turns the remaining lines into an :class:`AgentReport`
according to the agent's output family (``kind``); :func:`parse_log` does the
same for the tail of a log file.

Rules common to every family:

* One JSON object per line. Lines that are not JSON (stderr, progress text),
  JSON that is malformed or cut off, JSON that is not an object and events of
  unknown ``type`` are skipped; nothing here raises on bad input.
* A field of the wrong type (a string where a number belongs, a negative or
  non-finite number, a list where an object belongs) counts as absent.
* If a JSON family recognized no event at all (say the profile was overridden
  to print text), the report is the plain-text one: ``summary`` is the tail of
  the output and every other field is empty.
* Summaries are cut to 4000 characters, ``error`` to one line of at most 500.
* The log may hold several runs one after the other: where a family reports a
  final outcome, the last one wins.

Per family (``kind``), the fields read and the event they come from:

**claude** (``claude -p --output-format stream-json --verbose``). Sources: the
Agent SDK's message types ``SDKSystemMessage`` and ``SDKResultMessage``
(https://docs.claude.com/en/docs/agent-sdk/typescript), which the CLI prints one
per line (https://docs.claude.com/en/docs/claude-code/headless).

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

**codex** (``codex exec --json``). Sources: ``docs/exec.md`` and
``codex-rs/exec/src/exec_events.rs`` in https://github.com/openai/codex
(https://developers.openai.com/codex/noninteractive).

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

**gemini** (``gemini --output-format stream-json``). Sources: the headless
reference (https://geminicli.com/docs/cli/headless/, ``docs/cli/headless.md``)
and ``packages/core/src/output/types.ts`` and ``packages/cli/src/nonInteractiveCli.ts``
in https://github.com/google-gemini/gemini-cli.

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

**goose** (``goose run --output-format stream-json``). No documentation page
describes the events; this follows goose's source: the ``StreamEvent`` enum and
``process_agent_response`` in ``crates/goose-cli/src/session/mod.rs`` and the
``Message`` type in ``crates/goose/src/conversation/message.rs``
(https://github.com/block/goose; ``stream-json`` came with block/goose#6228).

* ``{"type":"message","message":{id, role, content:[{type:"text", text}, ...]}}``:
  an assistant message's text items; streamed chunks share one ``id`` and are
  concatenated. The last assistant message with text -> summary.
* ``{"type":"model_change","model":...}`` -> ``model``.
* ``{"type":"error","error":"..."}`` -> ``is_error``/``error``. goose still
  prints ``complete`` after it, so ``complete`` does not clear it.
* ``{"type":"complete","total_tokens":N}``: goose reports only a total, which
  has no field here; ``input_tokens``/``output_tokens`` are read if present
  (proposed in https://github.com/aaif-goose/goose/pull/8870, open when this
  was written). No session id (the profile runs ``--no-session``), cost or
  turn count is printed.

**anything else** (aider, ``command``, a profile overridden to print text):
``summary`` is the last non-empty lines of output, at most 2000 characters,
with ANSI escape sequences removed; every other field is empty.

Pure: standard library only (and the log file names of :mod:`dispatcher.process.logcap`);
:func:`parse_log` reads one file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dispatcher.process import logcap

SUMMARY_MAX: Final = 4000
"""Longest summary kept, in characters."""

TEXT_TAIL_MAX: Final = 2000
"""Longest plain-text summary (the tail of the output), in characters."""

ERROR_MAX: Final = 500
"""Longest one-line error, in characters."""

DEFAULT_MAX_BYTES: Final = 8 * 2**20
"""How much of a log's end :func:`parse_log` reads by default."""

HEAD_MAX_BYTES: Final = 256 * 2**10
"""How much of a log's start :func:`session_in_head` reads (agents print their id first)."""

DISPATCHER_PREFIX: Final = "[dispatcher] "
"""Lines the daemon writes into a job log start with this."""

_ELLIPSIS: Final = "…"
_ANSI_RE: Final = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class AgentReport:
    """What the agent reported about its own run. Every field may be empty."""

    summary: str | None = None
    """The agent's final message (JSON families) or the tail of its output (text)."""
    is_error: bool = False
    """The agent itself reported failure (whatever its exit code)."""
    error: str | None = None
    """One line saying why, when ``is_error``."""
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    session_id: str | None = None
    """What a later ``claude --resume`` / ``codex exec resume <id>`` needs."""
    model: str | None = None


EMPTY_REPORT: Final = AgentReport()


# --- field readers: a value of the wrong type is treated as absent ----------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _dict(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _add(total: int | None, value: object) -> int | None:
    number = _int(value)
    if number is None:
        return total
    return (total or 0) + number


def _clip(text: str | None, limit: int = SUMMARY_MAX) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def _one_line(text: str) -> str:
    return _clip(" ".join(text.split()), ERROR_MAX) or "error"


def _texts(blocks: object, kind: str = "text") -> list[str]:
    """The ``text`` of every ``{"type": kind, "text": ...}`` item of a list."""
    found: list[str] = []
    for block in _list(blocks):
        item = _dict(block)
        text = item.get("text")
        if item.get("type") == kind and isinstance(text, str):
            found.append(text)
    return found


# --- per-family parsers -----------------------------------------------------------------------


class _Parser:
    """Reads one family's events; :meth:`feed` says whether it knew the event."""

    def feed(self, event: Mapping[str, object]) -> bool:
        raise NotImplementedError

    def report(self) -> AgentReport:
        raise NotImplementedError


class _Claude(_Parser):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.last_text: str | None = None
        self.result: Mapping[str, object] | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "system":
            if event.get("subtype") == "init":
                self.session_id = _str(event.get("session_id")) or self.session_id
                self.model = _str(event.get("model")) or self.model
            else:
                self.session_id = self.session_id or _str(event.get("session_id"))
            return True
        if kind == "assistant":
            message = _dict(event.get("message"))
            self.model = self.model or _str(message.get("model"))
            self.session_id = self.session_id or _str(event.get("session_id"))
            texts = [t for t in _texts(message.get("content")) if t.strip()]
            if texts:
                self.last_text = "\n".join(texts)
            return True
        if kind == "result":
            self.result = event
            return True
        return kind in ("user", "stream_event")

    def report(self) -> AgentReport:
        result = self.result
        if result is None:
            return AgentReport(
                summary=_clip(self.last_text), session_id=self.session_id, model=self.model
            )
        text = _str(result.get("result"))
        subtype = _str(result.get("subtype"))
        is_error = result.get("is_error") is True or bool(subtype and subtype.startswith("error"))
        error = None
        if is_error:
            errors = [e for e in _list(result.get("errors")) if isinstance(e, str) and e.strip()]
            named = subtype if subtype and subtype != "success" else "an error"
            reason = text or "; ".join(errors) or f"claude reported {named}"
            error = _one_line(reason)
        usage = _dict(result.get("usage"))
        input_tokens = None
        for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            input_tokens = _add(input_tokens, usage.get(field))
        return AgentReport(
            summary=_clip(text or self.last_text),
            is_error=is_error,
            error=error,
            cost_usd=_float(result.get("total_cost_usd")),
            input_tokens=input_tokens,
            output_tokens=_int(usage.get("output_tokens")),
            turns=_int(result.get("num_turns")),
            session_id=_str(result.get("session_id")) or self.session_id,
            model=self.model,
        )


class _Codex(_Parser):
    _ITEM_EVENTS: Final = ("item.started", "item.updated", "item.completed")
    _OTHER_EVENTS: Final = ("turn.started", "item.plan.delta", "request_user_input")

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.message: str | None = None
        self.error: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.turns: int | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "thread.started":
            self.session_id = _str(event.get("thread_id")) or self.session_id
        elif kind in self._ITEM_EVENTS:
            item = _dict(event.get("item"))
            text = item.get("text")
            final = kind == "item.completed" and item.get("type") == "agent_message"
            if final and isinstance(text, str) and text.strip():
                self.message = text
        elif kind == "turn.completed":
            usage = _dict(event.get("usage"))
            self.input_tokens = _add(self.input_tokens, usage.get("input_tokens"))
            self.output_tokens = _add(self.output_tokens, usage.get("output_tokens"))
            self.turns = (self.turns or 0) + 1
            self.error = None
        elif kind == "turn.failed":
            self.turns = (self.turns or 0) + 1
            self.error = _str(_dict(event.get("error")).get("message")) or "codex: turn failed"
        elif kind == "error":
            self.error = _str(event.get("message")) or "codex reported an error"
        else:
            return kind in self._OTHER_EVENTS
        return True

    def report(self) -> AgentReport:
        return AgentReport(
            summary=_clip(self.message),
            is_error=self.error is not None,
            error=None if self.error is None else _one_line(self.error),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            turns=self.turns,
            session_id=self.session_id,
        )


class _Gemini(_Parser):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.blocks: list[str] = []
        self.open = False
        """Whether the next assistant delta continues ``blocks[-1]``."""
        self.error_event: str | None = None
        self.result: Mapping[str, object] | None = None

    def feed(self, event: Mapping[str, object]) -> bool:
        kind = event.get("type")
        if kind == "init":
            self.session_id = _str(event.get("session_id")) or self.session_id
            self.model = _str(event.get("model")) or self.model
        elif kind == "message":
            self._message(event)
        elif kind in ("tool_use", "tool_result"):
            self.open = False
        elif kind == "error":
            if event.get("severity") == "error":
                self.error_event = _str(event.get("message")) or "gemini reported an error"
        elif kind == "result":
            self.result = event
        else:
            return False
        return True

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

    def report(self) -> AgentReport:
        summary = next((b for b in reversed(self.blocks) if b.strip()), None)
        result = self.result
        if result is None:
            failed = self.error_event is not None
            return AgentReport(
                summary=_clip(summary),
                is_error=failed,
                error=_one_line(self.error_event) if self.error_event else None,
                session_id=self.session_id,
                model=self.model,
            )
        is_error = result.get("status") == "error"
        error = None
        if is_error:
            message = _str(_dict(result.get("error")).get("message"))
            error = _one_line(message or self.error_event or "gemini reported status error")
        stats = _dict(result.get("stats"))
        return AgentReport(
            summary=_clip(summary),
            is_error=is_error,
            error=error,
            input_tokens=_int(stats.get("input_tokens")),
            output_tokens=_int(stats.get("output_tokens")),
            session_id=self.session_id,
            model=self.model,
        )


class _Goose(_Parser):
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
            self._message(_dict(event.get("message")))
        elif kind == "model_change":
            self.model = _str(event.get("model")) or self.model
        elif kind == "error":
            self.error = _str(event.get("error")) or "goose reported an error"
        elif kind == "complete":
            self.input_tokens = _int(event.get("input_tokens"))
            self.output_tokens = _int(event.get("output_tokens"))
        else:
            return kind == "notification"
        return True

    def _message(self, message: Mapping[str, object]) -> None:
        if message.get("role") != "assistant":
            return
        texts = _texts(message.get("content"))
        if not texts:
            return
        message_id = _str(message.get("id"))
        if message_id is not None and message_id == self.message_id and self.text is not None:
            self.text += "".join(texts)  # a streamed chunk of the same message
        else:
            self.text = "\n".join(texts)
            self.message_id = message_id

    def report(self) -> AgentReport:
        return AgentReport(
            summary=_clip(self.text),
            is_error=self.error is not None,
            error=None if self.error is None else _one_line(self.error),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            model=self.model,
        )


_PARSERS: Final[Mapping[str, Callable[[], _Parser]]] = {
    "claude": _Claude,
    "codex": _Codex,
    "gemini": _Gemini,
    "goose": _Goose,
}

KINDS: Final = frozenset(_PARSERS)
"""The families with a structured format; any other kind is read as plain text."""


# --- plain text --------------------------------------------------------------------------------


class _TextTail:
    """The last non-empty lines of output, about :data:`TEXT_TAIL_MAX` characters of them."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.size = 0

    def add(self, line: str) -> None:
        line = _ANSI_RE.sub("", line).rstrip()
        if not line.strip():
            return
        self.lines.append(line)
        self.size += len(line) + 1
        while len(self.lines) > 1 and self.size - len(self.lines[0]) - 1 >= TEXT_TAIL_MAX:
            self.size -= len(self.lines.popleft()) + 1

    def summary(self) -> str | None:
        text = "\n".join(self.lines).strip()
        if len(text) > TEXT_TAIL_MAX:
            text = _ELLIPSIS + text[-(TEXT_TAIL_MAX - 1) :]
        return text or None


def _json_object(line: str) -> Mapping[str, object] | None:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_dispatcher(line: str) -> bool:
    return line.startswith(DISPATCHER_PREFIX) or line.rstrip() == DISPATCHER_PREFIX.rstrip()


# --- public API ------------------------------------------------------------------------------


def parse_lines(kind: str, lines: Iterable[str]) -> AgentReport:
    """The report for ``lines`` of a job log (with or without line endings).

    ``kind`` is the output family: ``claude``, ``codex``, ``gemini`` or
    ``goose`` (see :data:`KINDS`); anything else is read as plain text. Lines
    starting with ``[dispatcher] `` are skipped. Never raises on bad content.
    """
    factory = _PARSERS.get(kind.strip().lower())
    parser = factory() if factory is not None else None
    tail = _TextTail()
    recognized = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if _is_dispatcher(line):
            continue
        tail.add(line)
        if parser is None:
            continue
        event = _json_object(line)
        if event is not None and parser.feed(event):
            recognized = True
    if parser is not None and recognized:
        return parser.report()
    return AgentReport(summary=tail.summary())


def parse_log(kind: str, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> AgentReport:
    """The report for the log at ``path``, reading at most its last ``max_bytes``.

    When the read starts inside the file, the partial first line is dropped.
    Bytes that are not UTF-8 are replaced. A missing file gives an empty
    report; other I/O errors propagate. Only this file is read, not rotated
    copies (``agent.log.1``): events printed once at the start (codex's
    ``thread.started``, gemini's ``init``) are missing from the report if they
    were rotated away or lie before the last ``max_bytes``; see
    :func:`session_in_head`.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - max_bytes)
            if start:
                fh.seek(start - 1)  # one byte more, to tell whether ``start`` begins a line
                data = fh.read(max_bytes + 1)
                cut = data.find(b"\n")
                data = data[cut + 1 :] if cut >= 0 else b""
            else:
                data = fh.read(max_bytes)
    except (FileNotFoundError, NotADirectoryError):
        return EMPTY_REPORT
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends,
    # which JSON allows unescaped inside strings.
    return parse_lines(kind, data.decode("utf-8", errors="replace").split("\n"))


def session_in_head(kind: str, path: Path, *, max_bytes: int = HEAD_MAX_BYTES) -> str | None:
    """The session id printed in the first ``max_bytes`` of the log at ``path``, or None.

    Codex (``thread.started``) and Gemini (``init``) print theirs once, at the start:
    :func:`parse_log` reads the end of a log and misses it in a long one, and a log
    rotation drops it.
    A partial last line is dropped; a missing file gives None. The log writer
    (:mod:`dispatcher.process.logpipe`) keeps the head in ``<path>.head`` before it
    first rotates the log: that copy is read when it exists.
    """
    head = logcap.head_path(path)
    try:
        with open(head if head.exists() else path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > max_bytes:
        data = data[: data.rfind(b"\n", 0, max_bytes) + 1]
    return parse_lines(kind, data.decode("utf-8", errors="replace").split("\n")).session_id
