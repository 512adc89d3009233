"""The database a daemon starts on without running Alembic: a new SQLite one made from
the chain's recorded result (migrations/head.sqlite.json), and one already at head
left alone (dispatcher/store/sqlite_head.py, dispatcher/store/revision.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.store import revision, sqlite_head
from dispatcher.store.database import Store, migrate, migrations_dir
from tests.migrationutil import SOURCE_MIGRATIONS, downgrade, head_revision
from tests.schemautil import snapshot


def chain_made(tmp_path: Path, name: str = "chain.db") -> Path:
    db = tmp_path / name
    migrate(f"sqlite:///{db}", recorded=False)
    return db


def canonical(statements: list[str]) -> list[tuple[str, ...]]:
    """Each statement as its sorted lines: the chain's batch steps keep a table's
    constraints in sets, so their order in its CREATE TABLE can change between runs."""
    return sorted(
        tuple(sorted(line.strip().rstrip(",").strip() for line in s.splitlines()))
        for s in statements
    )


def test_the_recorded_head_is_what_the_chain_makes_now(tmp_path: Path) -> None:
    committed = json.loads((SOURCE_MIGRATIONS / sqlite_head.FILE).read_text())
    made = sqlite_head.dump(chain_made(tmp_path))
    stale = "migrations/head.sqlite.json is stale: run scripts/sqlite-head"
    assert committed["revision"] == made["revision"] == head_revision(), stale
    assert canonical(committed["statements"]) == canonical(made["statements"]), stale


def test_a_new_database_is_made_from_the_record(tmp_path: Path) -> None:
    db = tmp_path / "recorded.db"
    migrate(f"sqlite:///{db}")
    committed = json.loads((SOURCE_MIGRATIONS / sqlite_head.FILE).read_text())
    assert sqlite_head.dump(db) == committed
    store = Store(f"sqlite:///{db}")  # and the store works on it
    try:
        assert store.repos() == []
    finally:
        store.close()


def test_the_scripts_head_is_read_as_alembic_reads_it() -> None:
    assert revision.head_revision(migrations_dir()) == head_revision()


@pytest.mark.parametrize(
    ("scripts", "head"),
    [
        ({"a": 'revision = "1"\ndown_revision = None\n'}, "1"),
        (
            {
                "a": 'revision: str = "1"\ndown_revision: str | None = None\n',
                "b": "revision: str = '2'\ndown_revision: str | None = '1'\n",
            },
            "2",
        ),
        # Two heads, a merge of two, a revision not in quotes, no revision line, and a
        # parent no script is: only Alembic can say.
        (
            {
                "a": 'revision = "1"\ndown_revision = None\n',
                "b": 'revision = "2"\ndown_revision = "1"\n',
                "c": 'revision = "3"\ndown_revision = "1"\n',
            },
            None,
        ),
        (
            {
                "a": 'revision = "1"\ndown_revision = None\n',
                "b": 'revision = "2"\ndown_revision = "1"\n',
                "c": 'revision = "3"\ndown_revision = "1"\n',
                "d": 'revision = "4"\ndown_revision = ("2", "3")\n',
            },
            "4",
        ),
        ({"a": "revision = make_id()\ndown_revision = None\n"}, None),
        ({"a": "down_revision = None\n"}, None),
        ({"a": 'revision = "2"\ndown_revision = "1"\n'}, None),
        ({}, None),
    ],
)
def test_the_head_is_read_from_plain_scripts_only(
    tmp_path: Path, scripts: dict[str, str], head: str | None
) -> None:
    (tmp_path / "versions").mkdir()
    for name, text in scripts.items():
        (tmp_path / "versions" / f"{name}.py").write_text(text)
    assert revision.head_revision(tmp_path) == head


def test_a_record_of_another_revision_is_not_used(tmp_path: Path) -> None:
    assert sqlite_head.statements(migrations_dir(), head_revision()) is not None
    assert sqlite_head.statements(migrations_dir(), "not-the-head") is None
    assert sqlite_head.statements(migrations_dir(), None) is None
    assert sqlite_head.statements(tmp_path, head_revision()) is None  # no file there


def test_a_database_with_tables_is_upgraded_by_alembic(tmp_path: Path) -> None:
    """Down to an older revision (tables in it): migrate upgrades it the usual way, and
    the record is never run over what is there."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    downgrade(url, "0015")
    migrate(url)
    assert snapshot(url) == snapshot(f"sqlite:///{chain_made(tmp_path)}")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert not sqlite_head.make(conn, ["CREATE TABLE never (x INTEGER)"])
            assert not sa.inspect(conn).has_table("never")
    finally:
        engine.dispose()


MIGRATE_AND_SAY = textwrap.dedent(
    """
    import json, sys
    from dispatcher.store.database import migrate
    migrate(sys.argv[1])
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "alembic")))
    """
)


def alembic_modules_of_migrate(url: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_SAY, url],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return list(json.loads(out.stdout))


def test_a_new_and_an_upgraded_database_cost_no_alembic(tmp_path: Path) -> None:
    """A daemon's first start on a new SQLite database and its restarts load no Alembic
    (about 0.5 s and 0.25 s of CPU); a database behind the head does."""
    url = f"sqlite:///{tmp_path}/db.sqlite"
    assert alembic_modules_of_migrate(url) == []  # new: from the record
    assert alembic_modules_of_migrate(url) == []  # at head
    downgrade(url, "0017")
    assert "alembic.command" in alembic_modules_of_migrate(url)
    assert alembic_modules_of_migrate(url) == []
