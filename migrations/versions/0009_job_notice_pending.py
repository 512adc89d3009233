"""job notice pending: notifications still owed survive a daemon stop

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 07:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notice_pending", sa.String(), nullable=True))
        batch_op.create_index("ix_job_notice_pending", ["notice_pending"], unique=False)
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("message_id")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_notice_pending")
        batch_op.drop_column("notice_pending")
