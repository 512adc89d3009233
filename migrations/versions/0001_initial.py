"""initial schema: repos and jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-24 02:29:21.545770
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "repo",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("default_branch", sa.String(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repo_name"), ["name"], unique=True)

    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "preparing",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "canceled",
                "merged",
                "discarded",
                name="jobstate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("prompt", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("base_ref", sa.String(), nullable=False),
        sa.Column("base_sha", sa.String(), nullable=False),
        sa.Column("target_branch", sa.String(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=True),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("branch", sa.String(), nullable=False),
        sa.Column("worktree", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        # INTEGER on SQLite (64 bits there), BIGINT on PostgreSQL: see models.BigInt.
        sa.Column("pid_start", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("signal", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("head_sha", sa.String(), nullable=True),
        sa.Column("commits_ahead", sa.Integer(), nullable=True),
        sa.Column("files_changed", sa.Integer(), nullable=True),
        sa.Column("insertions", sa.Integer(), nullable=True),
        sa.Column("deletions", sa.Integer(), nullable=True),
        sa.Column("merged_sha", sa.String(), nullable=True),
        sa.Column("merged_into", sa.String(), nullable=True),
        sa.Column("merge_strategy", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repo.id"],
        ),
        sa.ForeignKeyConstraint(
            ["retry_of"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_repo_id_id", ["repo_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_retry_of"), ["retry_of"], unique=False)
        batch_op.create_index("ix_job_state_id", ["state", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_state_id")
        batch_op.drop_index(batch_op.f("ix_job_retry_of"))
        batch_op.drop_index("ix_job_repo_id_id")

    op.drop_table("job")
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repo_name"))

    op.drop_table("repo")
