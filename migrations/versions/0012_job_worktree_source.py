"""job worktree source: pool, cold or fresh, and how long the job waited for its worktree

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worktree_source", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("worktree_wait_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("worktree_wait_s")
        batch_op.drop_column("worktree_source")
