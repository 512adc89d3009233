"""events, issues, ref state, trigger files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:49:46.503882
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("dedup_key", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repo.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_repo_id"), ["repo_id"], unique=False)

    op.create_table(
        "refstate",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(), nullable=False),
        sa.Column("sha", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repo.id"],
        ),
        sa.PrimaryKeyConstraint("repo_id", "ref"),
    )
    op.create_table(
        "issue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["event.id"],
        ),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repo.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("repo_id", "number"),
    )
    with op.batch_alter_table("issue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_issue_repo_id"), ["repo_id"], unique=False)

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("concurrency_group", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("profile", sa.JSON(), nullable=True))
        batch_op.create_index("ix_job_repo_group", ["repo_id", "concurrency_group"], unique=False)
        batch_op.create_index("ux_job_event_trigger", ["event_id", "trigger"], unique=True)
        batch_op.create_foreign_key("fk_job_event_id_event", "event", ["event_id"], ["id"])

    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.add_column(sa.Column("forge_name", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("triggers_text", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("triggers_blob", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("triggers_error", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("triggers_loaded_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("triggers_max_parallel", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_repo_forge_name"), ["forge_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("repo", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repo_forge_name"))
        batch_op.drop_column("triggers_max_parallel")
        batch_op.drop_column("triggers_loaded_at")
        batch_op.drop_column("triggers_error")
        batch_op.drop_column("triggers_blob")
        batch_op.drop_column("triggers_text")
        batch_op.drop_column("forge_name")

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("fk_job_event_id_event", type_="foreignkey")
        batch_op.drop_index("ux_job_event_trigger")
        batch_op.drop_index("ix_job_repo_group")
        batch_op.drop_column("profile")
        batch_op.drop_column("concurrency_group")
        batch_op.drop_column("event_id")

    with op.batch_alter_table("issue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_issue_repo_id"))

    op.drop_table("issue")
    op.drop_table("refstate")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_repo_id"))

    op.drop_table("event")
