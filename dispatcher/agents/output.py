"""What an agent printed, read back from its job log: final message, error, cost, tokens, session.

A job's log holds the agent's stdout and stderr, interleaved with lines the
daemon writes itself, which start with ``[dispatcher] `` and are skipped here.
:func:`parse_lines` turns the remaining lines into an
:class:`~dispatcher.agents.report.AgentReport` with the parser of the agent that
printed them (``kind``, an agent's name: see :mod:`dispatcher.agents.catalog`;
what each reads is in its module's docstring under :mod:`dispatcher.agents.builtin`);
:func:`parse_log` does the same for the tail of a log file.

Rules common to every agent:

* One JSON object per line goes to the parser's ``feed``, every other line
  (stderr, progress text; JSON that is malformed or cut off, or not an object)
  to its ``feed_text``; what it does not know is skipped. Nothing here raises
  on bad input.
* If the parser knew no line at all (say the profile was overridden to print
  text), the report is the plain-text one: ``summary`` is the tail of the
  output and every other field is empty.
* A failure the parser saw in the text (not logged in, no key, no network:
  :meth:`~dispatcher.agents.report.Parser.failure`) makes the report an error
  even if the structured part did not say so.
* Summaries are cut to 4000 characters, ``error`` to one line of at most 500.
* The log may hold several runs one after the other: where an agent reports a
  final outcome, the last one wins.

**anything else** (``command``, a profile overridden to print text):
``summary`` is the last non-empty lines of output, at most 2000 characters,
with ANSI escape sequences removed; every other field is empty.

Pure: no processes (the parsers of :mod:`dispatcher.agents.catalog`, the log file names of
:mod:`dispatcher.process.logcap`); :func:`parse_log` reads one file.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from dispatcher.agents import catalog
from dispatcher.agents.report import (
    ANSI_RE,
    ELLIPSIS,
    EMPTY_REPORT,
    SUMMARY_MAX,
    AgentReport,
    one_line,
)
from dispatcher.process import logcap

__all__ = [
    "EMPTY_REPORT",
    "SUMMARY_MAX",
    "AgentReport",
    "is_dispatcher_line",
    "json_event",
    "parse_lines",
    "parse_log",
]

TEXT_TAIL_MAX: Final = 2000
"""Longest plain-text summary (the tail of the output), in characters."""

DEFAULT_MAX_BYTES: Final = 8 * 2**20
"""How much of a log's end :func:`parse_log` reads by default."""

HEAD_MAX_BYTES: Final = 256 * 2**10
"""How much of a log's start :func:`session_in_head` reads (agents print their id first)."""

DISPATCHER_PREFIX: Final = "[dispatcher] "
"""Lines the daemon writes into a job log start with this."""

_AGENT_START_RE: Final = re.compile(r"^\[dispatcher\] agent [^\s:]+: \[")


def agent_start(agent: str, argv: Sequence[str]) -> str:
    """The note the runner writes into the job log as the agent starts (its argv as
    shown). :func:`parse_lines` reads what follows the last one: ``setup:`` writes to
    the same log before it, and its output is not the agent's."""
    return f"agent {agent}: {list(argv)!r}"


# --- plain text --------------------------------------------------------------------------------


class _TextTail:
    """The last non-empty lines of output, about :data:`TEXT_TAIL_MAX` characters of them."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.size = 0

    def add(self, line: str) -> None:
        line = ANSI_RE.sub("", line).rstrip()
        if not line.strip():
            return
        self.lines.append(line)
        self.size += len(line) + 1
        while len(self.lines) > 1 and self.size - len(self.lines[0]) - 1 >= TEXT_TAIL_MAX:
            self.size -= len(self.lines.popleft()) + 1

    def summary(self) -> str | None:
        text = "\n".join(self.lines).strip()
        if len(text) > TEXT_TAIL_MAX:
            text = ELLIPSIS + text[-(TEXT_TAIL_MAX - 1) :]
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


json_event = _json_object
"""The JSON object one log line holds, or None (not JSON, cut off, not an object)."""
is_dispatcher_line = _is_dispatcher
"""True for a line the daemon wrote into the log itself (``[dispatcher] ...``)."""


# --- public API ------------------------------------------------------------------------------


def parse_lines(kind: str, lines: Iterable[str]) -> AgentReport:
    """The report for ``lines`` of a job log (with or without line endings).

    ``kind`` names the agent whose parser reads them (an agent's name, see
    :mod:`dispatcher.agents.catalog`); anything else is read as plain text. Lines
    starting with ``[dispatcher] `` are skipped; at each :func:`agent_start` note the
    reading starts over, so what came before the agent (``setup:``'s output, an
    earlier attempt) is not read as its output. Never raises on bad content.
    """
    parser = catalog.parser(kind)
    tail = _TextTail()
    recognized = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if _AGENT_START_RE.match(line):
            parser, tail, recognized = catalog.parser(kind), _TextTail(), False
            continue
        if _is_dispatcher(line):
            continue
        tail.add(line)
        if parser is None:
            continue
        event = _json_object(line)
        known = parser.feed(event) if event is not None else parser.feed_text(line)
        recognized = recognized or known
    if parser is None:
        return AgentReport(summary=tail.summary())
    report = parser.report(tail.summary()) if recognized else AgentReport(summary=tail.summary())
    failure = parser.failure()
    if failure is not None and not report.is_error:
        report = replace(report, is_error=True, error=one_line(failure))
    return report


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
