"""job forge: on-success, the branch's last push, its pull request, the last forge error

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "on_success", "pushed_remote", "pushed_sha", "pushed_at", "pr_url", "pr_number",
    "pr_state", "forge_error",
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("on_success", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pushed_remote", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("pushed_sha", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("pushed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("pr_url", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("pr_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pr_state", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("forge_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
