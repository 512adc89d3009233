"""job_queued_notify: on PostgreSQL, a job queued by any node notifies every node's
listener (docs/cluster.md, "Claiming")

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 02:45:00.000000

A trigger, not code on each write path: a new job and one put back in the queue (a retry,
a re-queued lost run) notify ``dispatcher_job_queued`` with the repo id, delivered when
their transaction commits (identical notifications in one transaction are one). SQLite
has none: one daemon, woken in process.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION dispatcher_notify_job_queued() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('dispatcher_job_queued', NEW.repo_id::text);
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER job_queued_notify
        AFTER INSERT OR UPDATE OF state ON job
        FOR EACH ROW WHEN (NEW.state = 'queued')
        EXECUTE FUNCTION dispatcher_notify_job_queued()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS job_queued_notify ON job")
    op.execute("DROP FUNCTION IF EXISTS dispatcher_notify_job_queued()")
