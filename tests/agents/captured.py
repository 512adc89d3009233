"""What the real CLIs printed, as saved under tests/fixtures/agents/<agent>/."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.agents.report import Parser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agents"


def log(agent: str, *names: str) -> list[str]:
    """The job log of one run of ``agent``: the lines of its fixture files, in order
    (stdout ``.jsonl``, stderr ``.stderr.txt``)."""
    return [line for name in names for line in (FIXTURES / agent / name).read_text().split("\n")]


def unknown_events(parser: Parser, agent: str, *names: str) -> list[str]:
    """The JSON lines of those fixtures that ``parser`` does not know."""
    lines = [line for line in log(agent, *names) if line.strip().startswith("{")]
    return [line for line in lines if not parser.feed(json.loads(line))]
