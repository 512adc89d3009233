"""What an agent reports about its own run, and the base every agent's parser builds on.

:class:`AgentReport` is what :mod:`dispatcher.agents.output` reads back from a job
log: final message, whether the agent itself said it failed and why, cost, tokens,
turns, session and model. Each built-in agent with structured output (or text
worth reading, as aider's) has a :class:`Parser` in its module under
:mod:`dispatcher.agents.builtin`; the field readers here treat a value of the wrong
type (a string where a number belongs, a negative or non-finite number, a list
where an object belongs) as absent, so nothing here raises on bad input.

Pure: standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

SUMMARY_MAX: Final = 4000
"""Longest summary kept, in characters."""

ERROR_MAX: Final = 500
"""Longest one-line error, in characters."""

ELLIPSIS: Final = "…"
ANSI_RE: Final = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


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
    """What a later resume (``claude --resume``, ``codex exec resume <id>``, ...) needs."""
    model: str | None = None


EMPTY_REPORT: Final = AgentReport()


class Parser:
    """Reads one agent's output, line by line, into an :class:`AgentReport`.

    :meth:`feed` gets every line that is a JSON object, :meth:`feed_text` every
    other line (stderr, progress text); both say whether they knew the line. If
    nothing was known, the report is the plain-text one (the output's tail) and
    :meth:`report` is not asked. :meth:`failure` may name a failure seen in the
    text (not logged in, no key, no network) that the structured part missed;
    it fails the job even when the agent exited 0.
    """

    def feed(self, event: Mapping[str, object]) -> bool:
        return False

    def feed_text(self, line: str) -> bool:
        return False

    def report(self, tail: str | None) -> AgentReport:
        """The report; ``tail``: the last lines of output, the plain-text summary."""
        return AgentReport(summary=tail)

    def failure(self) -> str | None:
        return None


class TextFailures:
    """The first line of text (stderr, not an event) matching one of ``patterns``: how
    a CLI says it cannot run at all (no login, no key, an untrusted folder) when it
    prints no event for it. Parsers feed it from :meth:`Parser.feed_text` and return
    :attr:`found` from :meth:`Parser.failure`."""

    def __init__(self, *patterns: str) -> None:
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns))
        self.found: str | None = None

    def feed(self, line: str) -> bool:
        """Whether ``line`` matches; the first that does is kept, as one line."""
        if not self._pattern.search(ANSI_RE.sub("", line)):
            return False
        self.found = self.found or one_line(line)
        return True


# --- field readers: a value of the wrong type is treated as absent ----------------------------


def string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 0:
        return int(value)
    return None


def number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) and result >= 0 else None


def mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def add(total: int | None, value: object) -> int | None:
    """``total`` plus ``value`` when that is a count; ``total`` unchanged otherwise."""
    count = integer(value)
    if count is None:
        return total
    return (total or 0) + count


def add_all(values: Mapping[str, object], *fields: str) -> int | None:
    """The sum of the counts among ``values[field]`` for ``fields``; None if there is none
    (an agent that reports cached input apart from the rest, say)."""
    total: int | None = None
    for field in fields:
        total = add(total, values.get(field))
    return total


def add_cost(total: float | None, value: object) -> float | None:
    cost = number(value)
    if cost is None:
        return total
    return (total or 0.0) + cost


def clip(text: str | None, limit: int = SUMMARY_MAX) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def one_line(text: str) -> str:
    """``text`` as one line of at most :data:`ERROR_MAX` characters, ANSI escapes removed."""
    return clip(" ".join(ANSI_RE.sub("", text).split()), ERROR_MAX) or "error"


def texts(blocks: object, kind: str = "text") -> list[str]:
    """The ``text`` of every ``{"type": kind, "text": ...}`` item of a list."""
    found: list[str] = []
    for block in items(blocks):
        item = mapping(block)
        text = item.get("text")
        if item.get("type") == kind and isinstance(text, str):
            found.append(text)
    return found
