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


def _named_paths(text: str) -> set[str]:
    """Modules (``dispatcher/git/merge.py``) and folders (``tests/e2e/``) of this tree."""
    import re

    tree = r"(?<![\w/.])((?:dispatcher|triggers|tests|bench)/(?:[\w/.-]*\.py\b|[\w/]*/(?![\w.])))"
    return set(re.findall(tree, text))


def test_paths_named_in_the_docs_exist() -> None:
    """A path the README or docs/*.md names (``dispatcher/git/merge.py``) is in the tree."""
    built = {"dispatcher/_migrations"}  # made inside the wheel from migrations/
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for path in _named_paths(doc.read_text()) - built:
            assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"


def _map_of_modules(text: str) -> set[str]:
    """The modules in the first code block of docs/design.md's "Architecture": a tree
    of ``name/`` and ``name.py`` lines, two spaces of indent per level."""
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    stack: list[str] = []
    modules: set[str] = set()
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        names = line.strip().split("  ")[0]  # "a.py, b.py" lists several modules of one folder
        del stack[depth:]
        for name in (n.strip() for n in names.split(",")):
            if name.endswith("/"):
                stack.append(name.rstrip("/"))
            elif name.endswith(".py"):
                modules.add("/".join([*stack, name]))
    return modules


def test_the_architecture_map_names_every_module() -> None:
    """docs/design.md draws the tree: every module of dispatcher/ and triggers/ is on it,
    in its folder, and nothing on it is gone from the tree."""
    drawn = _map_of_modules((ROOT / "docs" / "design.md").read_text())
    actual = {
        str(module.relative_to(ROOT))
        for pkg in ("dispatcher", "triggers")
        for module in (ROOT / pkg).rglob("*.py")
        if module.name not in {"__init__.py", "__main__.py"}
    }
    assert not actual - drawn, f"not on the map: {sorted(actual - drawn)}"
    assert not drawn - actual, f"on the map but not in the tree: {sorted(drawn - actual)}"


def test_every_builtin_agent_has_its_page_and_its_exact_argv_in_the_table() -> None:
    """docs/agents.md's table shows each built-in profile's argv as the code has it, and
    each agent has its page under docs/agents/."""
    from dispatcher.agents.catalog import BUILTIN_PROFILES

    text = (ROOT / "docs" / "agents.md").read_text()
    for name, profile in BUILTIN_PROFILES.items():
        assert (ROOT / "docs" / "agents" / f"{name}.md").exists(), name
        argv = " ".join(a.replace("{prompt_file}", "PROMPT") for a in profile.argv)
        row = f"| [`{name}`](agents/{name}.md) | `{argv}` |"
        assert row in text, f"docs/agents.md lacks the row for {name}: {row}"
