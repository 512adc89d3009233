"""repo.hub: the remote a repo's results leave the machine to; job.hub_sha and
job.hub_error: where its branch is on that hub, or why it could not be pushed
(docs/cluster.md, step 6)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 02:30:00.000000

Rows written before it have none: no repo has a hub, so nothing is pushed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("repo") as batch:
        batch.add_column(sa.Column("hub", sa.String(), nullable=True))
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("hub_sha", sa.String(), nullable=True))
        batch.add_column(sa.Column("hub_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("hub_error")
        batch.drop_column("hub_sha")
    with op.batch_alter_table("repo") as batch:
        batch.drop_column("hub")
