"""What the real CLIs printed, as saved under tests/fixtures/agents/<agent>/<name>
(stdout ``.jsonl`` or ``.txt``, stderr ``.stderr.txt``), read back through the parsers."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.agents.output import AgentReport, parse_lines
from dispatcher.agents.report import Parser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agents"


def text(agent: str, name: str) -> str:
    return (FIXTURES / agent / name).read_text(encoding="utf-8")


def lines(agent: str, *names: str) -> list[str]:
    """The job log of one run of ``agent``: the lines of its fixture files, in order."""
    return [line for name in names for line in text(agent, name).split("\n")]


def parse(agent: str, *names: str) -> AgentReport:
    """The report for those fixtures of ``agent``, as the job's log would give it."""
    return parse_lines(agent, lines(agent, *names))


def unknown_events(parser: Parser, agent: str, *names: str) -> list[str]:
    """The JSON lines of those fixtures that ``parser`` does not know."""
    events = [line for line in lines(agent, *names) if line.strip().startswith("{")]
    return [line for line in events if not parser.feed(json.loads(line))]
