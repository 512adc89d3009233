"""rebase and fetch: a job's last rebase (onto, when); a repo's fetch setting and remote

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rebased_onto", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("rebased_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fetch", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("fetch_remote", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.drop_column("fetch_remote")
        batch_op.drop_column("fetch")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("rebased_at")
        batch_op.drop_column("rebased_onto")
