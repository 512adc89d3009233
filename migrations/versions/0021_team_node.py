"""team.node: the node that made a team, whose starts resume it (docs/cluster.md)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 02:40:00.000000

Teams made before it have none: any start resumes them (the database had one daemon).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("team") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=True))
        batch.create_index("ix_team_node", ["node"])


def downgrade() -> None:
    with op.batch_alter_table("team") as batch:
        batch.drop_index("ix_team_node")
        batch.drop_column("node")
