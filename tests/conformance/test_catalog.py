"""Every built-in agent has its conformance test, and its CLI is pinned."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.agents.catalog import BUILTIN_PROFILES
from tests.conformance.conftest import BIN, PINS

HERE = Path(__file__).resolve().parent


def test_every_builtin_agent_has_a_conformance_test() -> None:
    missing = [n for n in BUILTIN_PROFILES if not (HERE / f"test_{n}.py").exists()]
    assert not missing, f"built-in agents without tests/conformance/test_<name>.py: {missing}"


def test_every_builtin_agent_is_installed_from_the_pins() -> None:
    """The program of each built-in profile is in .conformance/bin (scripts/install-agents)."""
    absent = [p.program for p in BUILTIN_PROFILES.values() if not (BIN / p.program).exists()]
    assert not absent, f"not installed by scripts/install-agents: {absent}"


def test_the_npm_pins_are_exact_versions() -> None:
    deps = json.loads((PINS / "package.json").read_text())["dependencies"]
    loose = {name: v for name, v in deps.items() if not v[:1].isdigit()}
    assert not loose, f"pin exact versions in {PINS / 'package.json'}: {loose}"
