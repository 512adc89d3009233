"""A database's schema as plain data, with the differences between SQLite and PostgreSQL
that do not matter normalised away (each one named here), so two can be compared."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

# Reflected type -> the affinity both databases must agree on. Anything not listed fails
# the comparison by name: a new kind of column must be thought about here.
_AFFINITY: list[tuple[type[Any], str]] = [
    (sa.Boolean, "boolean"),
    (sa.Integer, "integer"),  # INTEGER, BIGINT (PostgreSQL's pid_start): SQLite's are 64-bit
    (sa.Float, "real"),  # REAL, FLOAT, DOUBLE PRECISION
    (sa.Numeric, "real"),
    (sa.DateTime, "datetime"),  # DATETIME, TIMESTAMP WITHOUT TIME ZONE (naive UTC)
    (sa.JSON, "json"),
    (sa.LargeBinary, "binary"),  # BLOB, BYTEA
    (sa.String, "text"),  # VARCHAR, VARCHAR(n), TEXT
]


def affinity(kind: Any) -> str:
    for cls, name in _AFFINITY:
        if isinstance(kind, cls):
            length = getattr(kind, "length", None)
            return f"{name}({length})" if name == "text" and length else name
    raise AssertionError(f"no affinity for the reflected type {kind!r}: add it to _AFFINITY")


def default(text: Any) -> str | None:
    """A server default without PostgreSQL's casts and quotes (``'[]'::json`` is ``[]``);
    a serial column's ``nextval(...)`` is no default of ours (SQLite's integer primary
    key counts up by itself)."""
    if text is None:
        return None
    value = str(text)
    if value.startswith("nextval("):
        return None
    value = re.sub(r"::[a-z ]+$", "", value)
    return value.strip("'")


def snapshot(url: str) -> dict[str, dict[str, Any]]:
    """Every table: columns (affinity, nullable, default), primary key, indexes (name,
    columns, unique; not those PostgreSQL makes for a unique constraint), unique
    constraints and foreign keys by their columns (SQLite leaves inline ones unnamed)."""
    engine = sa.create_engine(url)
    try:
        insp = sa.inspect(engine)
        out: dict[str, dict[str, Any]] = {}
        for table in sorted(insp.get_table_names()):
            out[table] = {
                "columns": {
                    c["name"]: (affinity(c["type"]), c["nullable"], default(c.get("default")))
                    for c in insp.get_columns(table)
                },
                "primary_key": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table)
                    if not i.get("duplicates_constraint")
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in insp.get_unique_constraints(table)
                ),
                "foreign_keys": sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in insp.get_foreign_keys(table)
                ),
            }
        return out
    finally:
        engine.dispose()
