"""job index for claiming: (state, repo_id, id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_state_repo_id_id", "job", ["state", "repo_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_state_repo_id_id", table_name="job")
