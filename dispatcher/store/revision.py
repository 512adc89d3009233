"""Is a database already at the newest schema? Answered without importing Alembic.

Importing Alembic and loading its script directory costs about 0.25 s of CPU, which a
daemon restarted on a database it (or another daemon) already upgraded need not spend.
:func:`head_revision` reads the one head from the migration scripts' text, the lines
Alembic's own template writes (``revision: str = "0018"``, ``down_revision: ... =
"0017"``); :func:`at_head` compares it with the database's ``alembic_version``. Where
the reading is not sure (a script in another form, several heads, no scripts), it
answers None and Alembic decides, as it always did: Alembic stays the one source of
the schema, this only skips asking it when the answer is known.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

_REVISION = re.compile(r"^revision(?:\s*:[^=\n]*)?\s*=\s*(.*)$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=\n]*)?\s*=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""^(?:"([^"\\]+)"|'([^'\\]+)')$""")
_QUOTED_ANY = re.compile(r"""["']([^"'\\]+)["']""")


def head_revision(scripts: Path) -> str | None:
    """The revision of ``scripts``/versions that no other script revises, or None when
    that is not plain from their text (then only Alembic can tell)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (scripts / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(rev) != 1 or len(down) != 1:
            return None
        quoted = _QUOTED.match(rev[0].strip())
        if quoted is None:
            return None
        revisions.add(quoted[1] or quoted[2])
        down_text = down[0].strip()
        if down_text != "None":
            parents = _QUOTED_ANY.findall(down_text)
            if not parents:
                return None
            revised.update(parents)
    heads = revisions - revised
    if len(heads) != 1 or not revised <= revisions:
        return None
    return heads.pop()


def at_head(conn: sa.Connection, head: str | None) -> bool:
    """True if the database on ``conn`` records exactly the revision ``head``."""
    if head is None or not sa.inspect(conn).has_table("alembic_version"):
        return False
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows == [head]
