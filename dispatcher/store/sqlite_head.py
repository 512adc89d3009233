"""A new SQLite database made in one step: the statements the migrations leave behind.

On an empty SQLite database, running the whole Alembic chain (importing Alembic, loading
every script, copying tables for each batch step) costs about 0.5 s of CPU, at every
first start of a daemon (every test daemon). ``head.sqlite.json`` beside the migration
scripts holds what that chain leaves: the database's dump (``sqlite3``'s ``iterdump``:
the ``CREATE`` statements as SQLite stores them, and the ``alembic_version`` row) and
the revision it is at. :func:`dispatcher.store.database.migrate` runs those statements
instead, in one write transaction, only on a database with nothing in it and only when
that revision is the scripts' head (:func:`dispatcher.store.revision.head_revision`);
otherwise, and on PostgreSQL, Alembic upgrades as always. Alembic stays the source of
the schema: ``scripts/sqlite-head`` writes the file from the chain's own result, and
tests/test_sqlite_head.py fails when it is stale or makes a database that differs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

FILE = "head.sqlite.json"
_AFTER_TABLES = ("CREATE INDEX", "CREATE UNIQUE INDEX", "CREATE TRIGGER", "CREATE VIEW")


def dump(db: Path) -> dict[str, Any]:
    """The file's content for the SQLite database ``db`` (made by the Alembic chain)."""
    with sqlite3.connect(db) as conn:
        dumped = [s for s in conn.iterdump() if s not in ("BEGIN TRANSACTION;", "COMMIT;")]
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    conn.close()
    # iterdump gives the tables by name, each with its rows, then the indexes in the
    # order they were made: the chain's batch steps make them in set order, which changes
    # from run to run. Sorted, the same schema is the same text.
    later = [s for s in dumped if s.startswith(_AFTER_TABLES)]
    tables = [s for s in dumped if not s.startswith(_AFTER_TABLES)]
    return {"revision": revision, "statements": tables + sorted(later)}


def render(db: Path) -> str:
    """The file's text for ``db``, as ``scripts/sqlite-head`` writes it."""
    return json.dumps(dump(db), indent=1) + "\n"


def statements(scripts: Path, head: str | None) -> list[str] | None:
    """The statements that make a database at ``head``, or None if ``scripts`` has no
    file for that revision (a new migration without ``scripts/sqlite-head`` run)."""
    if head is None:
        return None
    try:
        data = json.loads((scripts / FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if data.get("revision") != head:
        return None
    return list(data["statements"])


def make(conn: sa.Connection, made_by: list[str]) -> bool:
    """In the caller's write transaction on an SQLite ``conn``: run ``made_by`` and
    answer True if the database has nothing in it yet; else change nothing, False."""
    if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one():
        return False
    for statement in made_by:
        conn.exec_driver_sql(statement)
    return True
