"""The captured agent output under tests/fixtures/agents, read back through the parsers."""

from __future__ import annotations

from pathlib import Path

from dispatcher.agents.output import AgentReport, parse_lines

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "agents"


def lines(agent: str, name: str) -> list[str]:
    return (ROOT / agent / name).read_text().split("\n")


def parse(agent: str, name: str) -> AgentReport:
    """The report for fixture ``name`` of ``agent``, as the job's log would give it."""
    return parse_lines(agent, lines(agent, name))
