"""One line of a job log as a person reads it: a message, a tool call, a tool's result, an
error, the final outcome, a note of the daemon's, or plain text.

The dashboard (:mod:`dispatcher.web`) shows a log this way instead of raw JSON lines.
Lines are told apart as :mod:`dispatcher.agents.output` does (its ``[dispatcher] `` notes,
one JSON object per line); the JSON events read here are those of the built-in agents'
formats (:mod:`dispatcher.agents.builtin`): Claude Code's and Qwen's stream-json
(``assistant``/``user`` messages with ``text``, ``tool_use`` and ``tool_result`` blocks,
``result``), Codex's ``item.*`` events (``agent_message``, ``reasoning``,
``command_execution``, ``file_change``), Gemini's stream-json (``message``, ``tool_use``,
``tool_result``, ``result``) and, for anything else, any ``text``/``message``/``content``
field. An event none of these fit is shown by its type, compacted. Never raises.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from dispatcher.agents.output import DISPATCHER_PREFIX, is_dispatcher_line, json_event
from dispatcher.agents.report import ANSI_RE

Kind = Literal["message", "thinking", "tool", "result", "error", "final", "note", "event", "text"]

DETAIL_MAX: Final = 2000
"""The most characters of a tool's input or output shown."""


@dataclass(frozen=True)
class LineView:
    kind: Kind
    text: str  # the main text (a message, a command, an error)
    label: str = ""  # what it is: a tool's name, an event's type
    detail: str = ""  # a tool's input or output, cut to DETAIL_MAX


def view_line(line: str) -> list[LineView]:
    """What one log line (without its line ending) shows: usually one item, several for a
    message with several blocks, none for an empty line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return []
    if is_dispatcher_line(line):
        return [LineView("note", line.removeprefix(DISPATCHER_PREFIX).strip())]
    event = json_event(line)
    if event is None:
        return [LineView("text", ANSI_RE.sub("", line))]
    return list(_event(event)) or [LineView("event", _compact(event), label=_s(event.get("type")))]


def _event(e: Mapping[str, object]) -> Iterator[LineView]:
    kind = _s(e.get("type"))
    if kind in ("assistant", "user") and isinstance(e.get("message"), Mapping):
        yield from _blocks(_m(e.get("message")).get("content"))
    elif kind == "result":
        failed = e.get("is_error") is True or _s(e.get("subtype")).startswith("error")
        errors = e.get("errors")
        text = _s(e.get("result") or e.get("response")) or (
            "; ".join(map(str, errors)) if isinstance(errors, list) else _s(e.get("subtype"))
        )
        cost = e.get("total_cost_usd")
        label = f"cost ${cost:.4f}" if isinstance(cost, int | float) else ""
        yield LineView("error" if failed else "final", text or kind, label=label)
    elif kind.startswith("item.") and isinstance(e.get("item"), Mapping):
        if kind == "item.completed" or _s(_m(e.get("item")).get("type")) == "command_execution":
            yield from _codex_item(_m(e.get("item")), started=kind == "item.started")
    elif kind in ("error", "turn.failed"):
        err = e.get("error")
        yield LineView("error", _s(e.get("message")) or _s(_m(err).get("message")) or _s(err))
    elif kind == "message":  # gemini
        role = _s(e.get("role"))
        yield LineView("message" if role != "user" else "text", _s(e.get("content")), label=role)
    elif kind == "tool_use":  # gemini
        yield LineView(
            "tool", _s(e.get("tool_name")), label="tool", detail=_detail(e.get("parameters"))
        )
    elif kind == "tool_result":  # gemini
        failed = _s(e.get("status")) == "error"
        yield LineView("error" if failed else "result", _detail(e.get("output") or e.get("error")))
    elif kind == "system" or kind.endswith(("started", "init")):
        model = _s(e.get("model"))
        yield LineView("event", f"{kind} {_s(e.get('subtype'))}".strip(), label=model)
    else:
        text = _s(e.get("text") or e.get("message") or e.get("content"))
        if text:
            yield LineView("message", text, label=kind)


def _blocks(content: object) -> Iterator[LineView]:
    if isinstance(content, str):
        yield LineView("message", content)
        return
    for block in content if isinstance(content, list) else []:
        b = _m(block)
        kind = _s(b.get("type"))
        if kind == "text":
            yield LineView("message", _s(b.get("text")))
        elif kind == "thinking":
            yield LineView("thinking", _s(b.get("thinking")))
        elif kind == "tool_use":
            yield LineView("tool", _s(b.get("name")), label="tool", detail=_detail(b.get("input")))
        elif kind == "tool_result":
            body = b.get("content")
            if isinstance(body, list):
                body = "\n".join(_s(_m(x).get("text")) for x in body)
            failed = b.get("is_error") is True
            yield LineView("error" if failed else "result", _detail(body))


def _codex_item(item: Mapping[str, object], *, started: bool) -> Iterator[LineView]:
    kind = _s(item.get("type"))
    if kind == "agent_message":
        yield LineView("message", _s(item.get("text")))
    elif kind == "reasoning":
        yield LineView("thinking", _s(item.get("text")))
    elif kind == "command_execution":
        if started:
            yield LineView("tool", _s(item.get("command")), label="command")
        else:
            code = item.get("exit_code")
            out = _detail(item.get("aggregated_output"))
            yield LineView("error" if code not in (0, None) else "result", out or f"exit {code}")
    elif kind == "file_change":
        changes = item.get("changes")
        paths = [_s(_m(c).get("path")) for c in changes] if isinstance(changes, list) else []
        yield LineView("tool", ", ".join(p for p in paths if p) or kind, label="file change")
    elif kind == "error":
        yield LineView("error", _s(item.get("message")))


def _m(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _s(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _compact(value)


def _compact(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = str(value)
    return _cut(text)


def _detail(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _cut(value)
    try:
        return _cut(json.dumps(value, ensure_ascii=False, indent=1, default=str))
    except (TypeError, ValueError):
        return _cut(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"
