"""Docs that are generated from code must match it."""

from __future__ import annotations

import json
from pathlib import Path

from dispatcher.api.app import openapi_document

ROOT = Path(__file__).resolve().parents[1]


def test_openapi_json_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_document())), (
        "docs/openapi.json is stale: run scripts/openapi"
    )


def test_every_route_is_documented_in_the_api_reference() -> None:
    reference = (ROOT / "docs" / "api.md").read_text()
    for path, methods in openapi_document()["paths"].items():  # type: ignore[attr-defined]
        for method in methods:
            assert f"{method.upper()} {path}" in reference, f"{method.upper()} {path} missing"


def test_tests_named_in_the_guarantees_exist() -> None:
    """Every `tests/x.py::name` (or `::name`, same file as the one before) in docs/guarantees.md."""
    import re

    text = (ROOT / "docs" / "guarantees.md").read_text()
    current = None
    named = 0
    for match in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", text):
        file, name = match.groups()
        if file:
            current = file
            assert (ROOT / file).is_file(), file
        if name:
            assert current is not None
            source = (ROOT / current).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"{current}::{name} does not exist"
            named += 1
    assert named >= 30


def test_tests_named_in_the_readme_exist() -> None:
    """The README's "what survives what" names tests as `file.py::name` (or `::name`, same file)."""
    import re

    text = (ROOT / "README.md").read_text()
    current: Path | None = None
    named = 0
    for match in re.finditer(r"`(?:tests/(?:\w+/)*)?(\w+\.py)?(?:::(\w+))?[^`]*`", text):
        file, name = match.groups()
        if file:
            found = sorted((ROOT / "tests").rglob(file))
            assert found, f"README names {file}, which is not under tests/"
            current = found[0]
        if name:
            assert current is not None
            assert re.search(rf"^def {name}\(", current.read_text(), re.M), f"{current}::{name}"
            named += 1
    assert named >= 15
