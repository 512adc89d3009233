"""Alembic environment: runs on the connection given by ``dispatcher.store.database.migrate``.

Autogenerate always writes ``batch_alter_table`` blocks, whatever database it compares
against: SQLite must copy a table to alter it, and on PostgreSQL the same block runs as
plain ``ALTER TABLE``, so one script serves both. procrastinate's tables (PostgreSQL
only, made by 0019 from its own schema) are not the models': autogenerate leaves them be.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import dispatcher.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config


def check_foreign_keys(conn: sa.Connection) -> None:
    """SQLite's migrations run with foreign keys off (a table is copied and the old one
    dropped: dispatcher/store/backends.py); before they commit, no row may point nowhere."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        first = ", ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken)
        raise RuntimeError(f"the migration left rows pointing nowhere: {first[:300]}")


def ours(name: str | None, type_: str, _parent: object) -> bool:
    """What autogenerate compares: not procrastinate's tables (``include_name``)."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


connection = config.attributes.get("connection")

if connection is None:  # `alembic` run by hand with sqlalchemy.url set
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as conn:
        context.configure(
            connection=conn, target_metadata=SQLModel.metadata, render_as_batch=True,
            include_name=ours,
        )  # fmt: skip
        with context.begin_transaction():
            context.run_migrations()
else:
    # One transaction for the whole upgrade on SQLite too (Alembic's default there is a
    # commit per migration): the store's connections issue BEGIN themselves, so SQLite's
    # DDL is transactional, and a failed step or check leaves the database as it was.
    context.configure(
        connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True,
        include_name=ours, transactional_ddl=True,
    )  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()
        check_foreign_keys(connection)
