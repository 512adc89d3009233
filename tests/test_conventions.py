"""dispatcher.jobs.conventions: skills' front matter, and what an agent is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.jobs import conventions
from tests.gitutil import commit_file, init_repo


@pytest.mark.parametrize(
    ("text", "description", "body_start"),
    [
        ("---\ndescription: Write migrations\n---\nUse alembic.\n", "Write migrations", "Use"),
        ("# Cutting a release\n\nTag it.\n", "Cutting a release", "# Cutting"),
        ("---\n: [broken yaml\n---\nBody line\n", "---", "---"),  # kept as body text
        ("---\ndescription: 42\n---\nFirst line\n", "First line", "First"),  # not a string
        ("", "", ""),
    ],
)
def test_parse_skill(text: str, description: str, body_start: str) -> None:
    skill = conventions.parse_skill("s", text)
    assert skill.description == description
    assert skill.body.startswith(body_start)
    assert skill.path == ".dispatcher/skills/s.md"


def test_load_reads_the_commit_not_the_checkout(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r", files={"AGENTS.md": "v1\n"})
    first = commit_file(repo, ".dispatcher/skills/a.md", "---\ndescription: A\n---\nbody a\n")
    (repo / "AGENTS.md").write_text("uncommitted\n")
    conv = conventions.load(repo, first)
    assert conv.agents_md == "v1\n"
    assert list(conv.skills) == ["a"]
    second = commit_file(repo, ".dispatcher/skills/b.md", "b\n")
    assert list(conventions.load(repo, second).skills) == ["a", "b"]
    assert list(conventions.load(repo, first).skills) == ["a"]  # the older commit's
    text = conventions.render(conventions.load(repo, second), ["b"], include_agents_md=False)
    assert "v1" not in text and "# Skill: b\n\nb" in text and "- a: A" in text
    with pytest.raises(InvalidInput, match="unknown skill 'c'"):
        conventions.check_selected(conventions.load(repo, second), ["c"])
    assert conventions.render(conventions.Conventions(), [], include_agents_md=True) == ""
