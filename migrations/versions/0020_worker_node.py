"""worker.node: the state dir a worker start ran from, the same for each of its starts
(docs/cluster.md)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 02:20:00.000000

Rows written before it have none: they are the starts of the one daemon the database had.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=True))
        batch.create_index("ix_worker_node", ["node"])


def downgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        batch.drop_index("ix_worker_node")
        batch.drop_column("node")
