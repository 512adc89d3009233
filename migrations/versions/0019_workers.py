"""worker: the daemons that run jobs from this database; job.worker_id; procrastinate's
schema on PostgreSQL (docs/cluster.md)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 19:30:00.000000

On PostgreSQL this also creates procrastinate's tables, types and functions
(``procrastinate_*``), from the schema of the pinned procrastinate (3.10.0): its workers'
heartbeats are how a worker is known to be alive. A later procrastinate with a changed
schema comes with a migration of ours that applies its migration files. SQLite has none of
them: one daemon, no queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # see models.BigInt


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "worker",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state_dir", sa.String(), nullable=False),
        sa.Column("api_url", sa.String(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("queue_worker_id", _BIGINT, nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_worker_name", "worker", ["name"])
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("worker_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_job_worker_id_worker", "worker", ["worker_id"], ["id"])
        batch.create_index("ix_job_worker_id", ["worker_id"])
    if _postgresql():
        from procrastinate.schema import SchemaManager

        # No parameters are bound, but the driver still reads '%' as one: doubled, as
        # procrastinate's own apply_schema does.
        op.get_bind().exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    if _postgresql():
        bind = op.get_bind()
        for table in ("procrastinate_events", "procrastinate_periodic_defers",
                      "procrastinate_jobs", "procrastinate_workers"):  # fmt: skip
            bind.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
        routines = bind.exec_driver_sql(
            "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%%'"
        ).all()
        for signature, kind in routines:
            what = "PROCEDURE" if kind == "p" else "FUNCTION"
            bind.exec_driver_sql(f"DROP {what} IF EXISTS {signature} CASCADE")
        for kind in ("procrastinate_job_to_defer_v1", "procrastinate_job_event_type",
                     "procrastinate_job_status"):  # fmt: skip
            bind.exec_driver_sql(f"DROP TYPE IF EXISTS {kind} CASCADE")
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_worker_id")
        batch.drop_constraint("fk_job_worker_id_worker", type_="foreignkey")
        batch.drop_column("worker_id")
    op.drop_index("ix_worker_name", table_name="worker")
    op.drop_table("worker")
