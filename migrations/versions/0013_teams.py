"""teams: team, team_task, team_message; a job's team and task

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "team",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("goal", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("branch", sa.String(), nullable=False),
        sa.Column("base_sha", sa.String(), nullable=False),
        sa.Column("lead_job_id", sa.Integer(), nullable=True),
        sa.Column("lead_agent", sa.String(), nullable=True),
        sa.Column("lead_command", sa.JSON(), nullable=True),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("held", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repo.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_team_repo_id", "team", ["repo_id"])
    op.create_table(
        "team_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("prompt", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=True),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("blocked_by", sa.JSON(), nullable=False),
        sa.Column("owns", sa.JSON(), nullable=False),
        sa.Column("requires_plan", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("plan", sa.String(), nullable=True),
        sa.Column("plan_approved", sa.Boolean(), nullable=False),
        sa.Column("feedback", sa.String(), nullable=True),
        sa.Column("fix_of", sa.Integer(), nullable=True),
        sa.Column("signal", sa.String(), nullable=True),
        sa.Column("signal_reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_team_task_team_id", "team_task", ["team_id"])
    op.create_table(
        "team_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("sender", sa.String(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_team_message_inbox", "team_message", ["team_id", "recipient", "delivered_at"]
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("task_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_job_team_id", ["team_id"])
        batch_op.create_index("ix_job_task_id", ["task_id"])


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_task_id")
        batch_op.drop_index("ix_job_team_id")
        batch_op.drop_column("task_id")
        batch_op.drop_column("team_id")
    op.drop_index("ix_team_message_inbox", table_name="team_message")
    op.drop_table("team_message")
    op.drop_index("ix_team_task_team_id", table_name="team_task")
    op.drop_table("team_task")
    op.drop_index("ix_team_repo_id", table_name="team")
    op.drop_table("team")
