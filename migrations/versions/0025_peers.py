"""cluster_secret: the credential nodes ask one another with (the peer token), and
job.node: the node a job must run on (a follow-up in its parent's worktree)
(docs/cluster.md, "Job operations on any node")

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 05:30:00.000000

Rows written before it have no pin: any node with a clone of the repo may claim them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_secret",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("node")
    op.drop_table("cluster_secret")
