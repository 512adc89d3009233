"""idempotency pending: an Idempotency-Key row is written with what its request
creates, in one transaction, before the answer is stored on it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 23:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotentrequest", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=True)
        batch_op.alter_column("content_type", existing_type=sa.String(), nullable=True)
        batch_op.add_column(sa.Column("resource_kind", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("resource_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Rows still pending have no answer to keep: they go.
    op.execute("DELETE FROM idempotentrequest WHERE status IS NULL")
    with op.batch_alter_table("idempotentrequest", schema=None) as batch_op:
        batch_op.drop_column("resource_id")
        batch_op.drop_column("resource_kind")
        batch_op.alter_column("content_type", existing_type=sa.String(), nullable=False)
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column("status", existing_type=sa.Integer(), nullable=False)
