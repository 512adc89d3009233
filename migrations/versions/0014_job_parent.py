"""job parent: the job whose agent created it through the MCP server (its job token)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_parent_id"), ["parent_id"], unique=False)
        batch_op.create_foreign_key("fk_job_parent_id_job", "job", ["parent_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("fk_job_parent_id_job", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_job_parent_id"))
        batch_op.drop_column("parent_id")
