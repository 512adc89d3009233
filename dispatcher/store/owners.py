"""Whose rows are whose: a node's jobs and teams, and the attempt a worker's writes are for.

Several daemons may share one database (docs/cluster.md). A start takes as its own the
rows of its node (the earlier starts of its state dir: ``worker.node``) and the rows no
worker holds (written before workers existed): :func:`node_jobs`, :func:`node_teams`.
What a worker writes about a job's run is for the attempt it claimed: a :class:`Guard`
(its worker id and attempt) in the write's own WHERE, so that a worker whose job was
taken over (another worker, a newer attempt) writes nothing (:class:`TakenOver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from dispatcher.errors import InvalidState
from dispatcher.store.models import Job, Worker
from dispatcher.store.team_models import Team


@dataclass(frozen=True)
class Guard:
    """The claim a worker's writes about a job are for: the worker that claimed it (None:
    a claim without a worker, tests' runners) and its attempt."""

    worker_id: int | None
    attempt: int

    @classmethod
    def of(cls, job: Job) -> Guard:
        """The claim ``job``'s row (as last read or written) records."""
        return cls(job.worker_id, job.attempt)

    def holds(self, worker_id: int | None, attempt: int) -> bool:
        return self.worker_id == worker_id and self.attempt == attempt

    def where(self, table: sa.Table | None = None) -> sa.ColumnElement[bool]:
        """The guard as SQL on the job table (``table``: Core's, else the model's)."""
        worker: Any = table.c.worker_id if table is not None else col(Job.worker_id)
        attempt: Any = table.c.attempt if table is not None else col(Job.attempt)
        return sa.and_(worker.is_not_distinct_from(self.worker_id), attempt == self.attempt)


class TakenOver(InvalidState):
    """The job is no longer the writer's: another worker or a newer attempt holds it (it
    was taken over); the write changed nothing."""


def taken_over(job_id: int, guard: Guard, worker_id: int | None, attempt: int) -> TakenOver:
    return TakenOver(
        f"job {job_id} was taken over: attempt {attempt} of worker {worker_id}, not "
        f"attempt {guard.attempt} of worker {guard.worker_id}",
        details={"worker_id": worker_id, "attempt": attempt},
    )


def node_workers(node: str) -> sa.Select[Any]:
    """The ids of every start of ``node``, and of the starts of no node (before nodes
    were recorded: the one daemon the database had, whose rows any start takes)."""
    return select(col(Worker.id)).where(
        sa.or_(col(Worker.node) == node, col(Worker.node).is_(None))
    )


def node_jobs(node: str | None) -> sa.ColumnElement[bool]:
    """Jobs ``node`` owns: claimed by one of its starts (or one of no node), or by no
    worker. ``None``: every job (SQLite's one node; a store without a node: tests)."""
    if node is None:
        return sa.true()
    return sa.or_(col(Job.worker_id).is_(None), col(Job.worker_id).in_(node_workers(node)))


def node_teams(node: str | None) -> sa.ColumnElement[bool]:
    """Teams ``node`` owns: made by one of its starts (their integration branch is in its
    clone), or before teams recorded their node."""
    if node is None:
        return sa.true()
    return sa.or_(col(Team.node).is_(None), col(Team.node) == node)
