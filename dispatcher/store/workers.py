"""The rows of the daemons that run jobs from this database (docs/cluster.md).

Each daemon start is a worker: its row is written when it starts and marked stopped when it
stops. It shares :class:`~dispatcher.store.database.Store`'s engines and its habit: short
single-writer writes (:mod:`~dispatcher.store.backends`), detached rows returned. Whether a
worker is alive is its queue worker's heartbeat on PostgreSQL (procrastinate's
``procrastinate_workers``), and on SQLite its own row: one daemon per database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, func, select

from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Worker, WorkerPublic, utcnow

_BUSY = (JobState.PREPARING, JobState.RUNNING)


@dataclass(eq=False)
class WorkerStore:
    store: Store

    def begin(self, worker: Worker) -> Worker:
        """Record this daemon's start, and mark every worker still recorded running as
        stopped: the caller holds the database for one daemon (see
        :meth:`Store.hold_database`), so any other running row is a daemon that was
        killed."""
        now = utcnow()
        with self.store.writing() as s:
            s.exec(sa.update(Worker).where(col(Worker.stopped_at).is_(None)).values(stopped_at=now))
            s.add(worker)
            s.flush()
            return worker

    def joined_queue(self, worker_id: int, queue_worker_id: int) -> None:
        """The worker's queue worker (procrastinate's) registered with this id."""
        with self.store.writing() as s:
            s.exec(
                sa.update(Worker)
                .where(col(Worker.id) == worker_id)
                .values(queue_worker_id=queue_worker_id)
            )

    def stopped(self, worker_id: int) -> None:
        with self.store.writing() as s:
            s.exec(
                sa.update(Worker)
                .where(col(Worker.id) == worker_id, col(Worker.stopped_at).is_(None))
                .values(stopped_at=utcnow())
            )

    def get(self, worker_id: int) -> Worker:
        return self.store.row(Worker, worker_id)

    def listed(
        self, *, this: int | None, timeout: timedelta, everyone: bool = False
    ) -> list[WorkerPublic]:
        """The workers running (``everyone``: and those stopped), newest first, each with
        its last heartbeat, whether it is alive and its busy jobs; ``this``: the caller's."""
        with self.store.reading() as s:
            query = select(Worker).order_by(col(Worker.id).desc())
            if not everyone:
                query = query.where(col(Worker.stopped_at).is_(None))
            rows = list(s.exec(query).all())
            busy = dict(
                s.exec(
                    select(Job.worker_id, func.count())
                    .where(col(Job.state).in_(_BUSY), col(Job.worker_id).is_not(None))
                    .group_by(col(Job.worker_id))
                ).all()
            )
            beats = self.store.backend.heartbeats(s.connection())
        now = utcnow()
        return [_public(w, beats, busy, this, now, timeout) for w in rows]


def _public(
    w: Worker,
    beats: dict[int, datetime],
    busy: dict[int | None, int],
    this: int | None,
    now: datetime,
    timeout: timedelta,
) -> WorkerPublic:
    beat = beats.get(w.queue_worker_id) if w.queue_worker_id is not None else None
    if w.stopped_at is not None:
        alive = False
    elif w.queue_worker_id is not None:  # PostgreSQL: alive while its heartbeat is recent
        alive = beat is not None and now - beat <= timeout
    else:  # SQLite's one daemon (or one still joining the queue)
        alive = True
    assert w.id is not None
    return WorkerPublic(
        id=w.id, name=w.name, node=w.node, host=w.host, pid=w.pid, state_dir=w.state_dir,
        api_url=w.api_url, slots=w.slots, started_at=w.started_at, stopped_at=w.stopped_at,
        heartbeat_at=beat, alive=alive, this=w.id == this, running=busy.get(w.id, 0),
    )  # fmt: skip
