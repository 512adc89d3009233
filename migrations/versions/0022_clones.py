"""clone: each node's checkout of a repo; repo.remote_key matches clones across machines
(docs/cluster.md, "Clones per node")

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 02:40:00.000000

Every repo's path becomes a clone of the node whose daemon ran last (the newest worker row
with a node: migration 0020), or, when no row names one, a clone with no node, which the
first daemon start after the upgrade takes (``Store.adopt_clones``): until now one daemon
held the database, so that start is this database's daemon. ``repo.path`` stays (the path
the repo was first registered with) but is no longer unique: two machines may keep two
repos at one path. ``repo.remote_key`` starts empty; each daemon start fills it in for its
own clones (``Repos.note_remotes``). The last seen refs of each repo (table ``refstate``)
become its clone's (``clone.refs``): each clone has its own branches.

The downgrade keeps the repo rows and drops every clone (the repos' first paths stay; a
repo's last seen refs are its oldest clone's); it fails on the unique path if two repos
were registered at one path.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's UNIQUE (path) has no name: batch mode reflects it under this convention.
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _path_unique() -> str:
    """The unique constraint on repo.path: PostgreSQL's own name, or the convention's."""
    return "repo_path_key" if op.get_bind().dialect.name == "postgresql" else "uq_repo_path"


def upgrade() -> None:
    op.create_table(
        "clone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(), nullable=True),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repo.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("repo_id", "node", name="uq_clone_repo_node"),
        sa.UniqueConstraint("node", "path", name="uq_clone_node_path"),
    )
    with op.batch_alter_table("repo", naming_convention=_NAMES) as batch:
        batch.drop_constraint(_path_unique(), type_="unique")
        batch.add_column(sa.Column("remote_key", sa.String(), nullable=True))
        batch.create_index("ix_repo_remote_key", ["remote_key"])
    op.execute(
        "INSERT INTO clone (repo_id, node, path, refs, created_at) "
        "SELECT repo.id, (SELECT worker.node FROM worker WHERE worker.node IS NOT NULL "
        "ORDER BY worker.id DESC LIMIT 1), repo.path, '{}', repo.created_at FROM repo"
    )
    # Each repo's last seen refs become its clone's (one clone per repo so far).
    conn = op.get_bind()
    seen: dict[int, dict[str, str]] = {}
    for repo_id, ref, sha in conn.execute(sa.text("SELECT repo_id, ref, sha FROM refstate")):
        seen.setdefault(repo_id, {})[ref] = sha
    set_refs = sa.text("UPDATE clone SET refs = :refs WHERE repo_id = :repo_id").bindparams(
        sa.bindparam("refs", type_=sa.JSON())
    )
    for repo_id, refs in sorted(seen.items()):
        conn.execute(set_refs, {"refs": refs, "repo_id": repo_id})
    op.drop_table("refstate")


def downgrade() -> None:
    op.create_table(
        "refstate",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(), nullable=False),
        sa.Column("sha", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repo.id"]),
        sa.PrimaryKeyConstraint("repo_id", "ref"),
    )
    # A repo's last seen refs: its oldest clone's.
    conn = op.get_bind()
    oldest = sa.text(
        "SELECT repo_id, refs FROM clone WHERE id IN (SELECT min(id) FROM clone GROUP BY repo_id)"
    ).columns(sa.column("repo_id", sa.Integer()), sa.column("refs", sa.JSON()))
    rows = [
        {"repo_id": repo_id, "ref": ref, "sha": sha}
        for repo_id, refs in conn.execute(oldest)
        for ref, sha in sorted((refs or {}).items())
    ]
    if rows:
        conn.execute(
            sa.text("INSERT INTO refstate (repo_id, ref, sha) VALUES (:repo_id, :ref, :sha)"),
            rows,
        )
    op.drop_table("clone")
    with op.batch_alter_table("repo", naming_convention=_NAMES) as batch:
        batch.drop_index("ix_repo_remote_key")
        batch.drop_column("remote_key")
        batch.create_unique_constraint(_path_unique(), ["path"])
