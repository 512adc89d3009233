"""agent environments and reporting: workspace, ports, agent reports, follow-ups,
budgets, notification deliveries

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 05:45:00.000000
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big() -> sa.types.TypeEngine[Any]:
    """INTEGER on SQLite (64 bits there), BIGINT on PostgreSQL: see models.BigInt."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


_JOB_COLUMNS: list[tuple[str, Callable[[], sa.types.TypeEngine[Any]]]] = [
    ("workspace", sa.JSON),
    ("max_cost_usd", sa.Float),
    ("followup_of", sa.Integer),
    ("followed_by", sa.Integer),
    ("port", sa.Integer),
    ("summary", sa.String),
    ("cost_usd", sa.Float),
    ("input_tokens", _big),
    ("output_tokens", _big),
    ("turns", sa.Integer),
    ("session_id", sa.String),
]


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        for name, kind in _JOB_COLUMNS:
            batch_op.add_column(sa.Column(name, kind(), nullable=True))
        batch_op.create_index(batch_op.f("ix_job_followup_of"), ["followup_of"], unique=False)
        batch_op.create_foreign_key("fk_job_followup_of_job", "job", ["followup_of"], ["id"])
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.add_column(sa.Column("daily_cost_usd", sa.Float(), nullable=True))
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_delivery_job_id"), "delivery", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_job_id"), table_name="delivery")
    op.drop_table("delivery")
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.drop_column("daily_cost_usd")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("fk_job_followup_of_job", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_job_followup_of"))
        for name, _ in reversed(_JOB_COLUMNS):
            batch_op.drop_column(name)
