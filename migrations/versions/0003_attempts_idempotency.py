"""attempts, backoff, idempotency

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:16:02.295882
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotentrequest",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("request_hash", sa.String(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", "method", "path"),
    )
    with op.batch_alter_table("idempotentrequest", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotentrequest_created_at"), ["created_at"], unique=False
        )

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(sa.Column("not_before", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("not_before")
        batch_op.drop_column("max_attempts")

    with op.batch_alter_table("idempotentrequest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotentrequest_created_at"))

    op.drop_table("idempotentrequest")
