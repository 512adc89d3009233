"""The newest migration, read from the source tree's scripts (not hard-coded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

SOURCE_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def head_revision() -> str:
    head = ScriptDirectory(str(SOURCE_MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def version_files() -> list[str]:
    return sorted(p.name for p in (SOURCE_MIGRATIONS / "versions").glob("*.py"))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` with the package's scripts."""
    _step(url, revision, command.downgrade)


def upgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` up to ``revision`` (not the head: that is
    ``migrate``'s) with the package's scripts, on a plain engine."""
    _step(url, revision, command.upgrade)


def _step(url: str, revision: str, how: Callable[[Config, str], None]) -> None:
    from dispatcher.store.database import migrations_dir

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(migrations_dir()))
            cfg.attributes["connection"] = conn
            how(cfg, revision)
    finally:
        engine.dispose()
