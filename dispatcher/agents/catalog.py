"""Every built-in agent, by name: its profile and the parser of its output.

One module per agent under :mod:`dispatcher.agents.builtin` holds all the daemon
knows of that agent (argv, resume, flags, how its output reads); this module
only lists them.

Pure: no subprocesses, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import Final

from dispatcher.agents.builtin import (
    aider,
    claude,
    cline,
    codex,
    copilot,
    gemini,
    goose,
    opencode,
    qwen,
)
from dispatcher.agents.report import Parser
from dispatcher.agents.spec import AgentProfile

_MODULES: Final[tuple[ModuleType, ...]] = (
    claude,
    codex,
    aider,
    gemini,
    goose,
    opencode,
    qwen,
    copilot,
    cline,
)

BUILTIN_PROFILES: Final[Mapping[str, AgentProfile]] = MappingProxyType(
    {m.PROFILE.name: m.PROFILE for m in _MODULES}
)
"""The built-in profiles by name, in the order ``dispatcher agents`` lists them."""

PARSERS: Final[Mapping[str, type[Parser]]] = MappingProxyType(
    {m.PROFILE.name: m.PARSER for m in _MODULES if m.PARSER is not None}
)
"""The parser of each agent whose output is read (``AgentProfile.reports`` names one)."""


def parser(kind: str) -> Parser | None:
    """A new parser for output ``kind`` (an agent's name), or None: plain text."""
    factory = PARSERS.get(kind.strip().lower())
    return factory() if factory is not None else None
