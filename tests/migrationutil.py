"""The newest migration, read from the source tree's scripts (not hard-coded)."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

SOURCE_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def head_revision() -> str:
    head = ScriptDirectory(str(SOURCE_MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def version_files() -> list[str]:
    return sorted(p.name for p in (SOURCE_MIGRATIONS / "versions").glob("*.py"))
