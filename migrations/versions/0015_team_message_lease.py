"""team message lease: a read leases a message until it is acknowledged (or the lease
ends and it is handed out again); a prompt leases it until its job is made

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 17:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("team_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leased_to", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("leased_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("team_message", schema=None) as batch_op:
        batch_op.drop_column("leased_until")
        batch_op.drop_column("leased_to")
