"""The rows of the daemons that run jobs from this database (docs/cluster.md).

Each daemon start is a worker: its row is written when it starts and marked stopped when it
stops. It shares :class:`~dispatcher.store.database.Store`'s engines and its habit: short
single-writer writes (:mod:`~dispatcher.store.backends`), detached rows returned. Whether a
worker is alive is its queue worker's heartbeat on PostgreSQL (procrastinate's
``procrastinate_workers``), and on SQLite its own row: one daemon per database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, func, select

from dispatcher.lifecycle import JobState
from dispatcher.store.database import Store
from dispatcher.store.models import ClusterSecret, Job, Worker, WorkerPublic, utcnow

_BUSY = (JobState.PREPARING, JobState.RUNNING)


@dataclass(eq=False)
class WorkerStore:
    store: Store

    def begin(self, worker: Worker) -> Worker:
        """Record this daemon's start, and mark stopped the earlier starts of its node
        still recorded running (the state dir's lock says they are gone: killed) and
        those of no node (written before nodes were). On SQLite, whose database is the
        state dir's, every running row: it has one daemon. Other nodes' rows on
        PostgreSQL are theirs: alive or not by their heartbeats (:meth:`dead`)."""
        now = utcnow()
        running: sa.ColumnElement[bool] = col(Worker.stopped_at).is_(None)
        if self.store.backend.queue_conninfo() is not None:
            running = sa.and_(
                running, sa.or_(col(Worker.node).is_(None), col(Worker.node) == worker.node)
            )
        with self.store.writing() as s:
            s.exec(sa.update(Worker).where(running).values(stopped_at=now))
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

    def node_of(self, worker_id: int) -> str | None:
        """The node of a worker (None: a start from before nodes, or no such worker)."""
        with self.store.reading() as s:
            return s.exec(select(Worker.node).where(col(Worker.id) == worker_id)).first()

    def secret(self, name: str) -> str:
        """The cluster's secret ``name``, made (random, 32 bytes) by the first caller: every
        node reads the same value (:class:`~dispatcher.store.models.ClusterSecret`)."""
        with self.store.reading() as s:
            row = s.get(ClusterSecret, name)
            if row is not None:
                return row.value
        with self.store.writing() as s:  # one writer at a time: no two values are made
            row = s.get(ClusterSecret, name)
            if row is None:
                row = ClusterSecret(name=name, value=secrets.token_urlsafe(32))
                s.add(row)
            return row.value

    def dead(
        self, node: str, timeout: timedelta, stopped_grace: timedelta = timedelta(0)
    ) -> list[int]:
        """The workers of the other nodes that are not alive (docs/cluster.md): every
        start of a node none of whose starts is alive, but a start that stopped cleanly
        less than ``stopped_grace`` ago (it left its agents running, for its node's next
        start to re-adopt). (The starts of no node, before nodes were recorded, are every
        node's own.) Their busy jobs are taken over (:mod:`dispatcher.jobs.takeover`)."""
        rows = self.listed(this=None, timeout=timeout, everyone=True)
        alive = {w.node for w in rows if w.alive}
        recent = utcnow() - stopped_grace
        return [
            w.id
            for w in rows
            if w.node not in (node, None)
            and w.node not in alive
            and (w.stopped_at is None or w.stopped_at <= recent)
        ]

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
        queued = self.store.backend.queue_conninfo() is not None
        return [_public(w, beats, busy, this, now, timeout, queued) for w in rows]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _public(
    w: Worker,
    beats: dict[int, datetime],
    busy: dict[int | None, int],
    this: int | None,
    now: datetime,
    timeout: timedelta,
    queued: bool,
) -> WorkerPublic:
    beat = beats.get(w.queue_worker_id) if w.queue_worker_id is not None else None
    if w.stopped_at is not None:
        alive = False
    elif w.queue_worker_id is not None:  # PostgreSQL: alive while its heartbeat is recent
        alive = beat is not None and now - beat <= timeout
    elif queued:  # PostgreSQL, still joining the queue: for the timeout at most
        alive = now - _aware(w.started_at) <= timeout
    else:  # SQLite's one daemon
        alive = True
    assert w.id is not None
    return WorkerPublic(
        id=w.id, name=w.name, node=w.node, host=w.host, pid=w.pid, state_dir=w.state_dir,
        api_url=w.api_url, slots=w.slots, started_at=w.started_at, stopped_at=w.stopped_at,
        heartbeat_at=beat, alive=alive, this=w.id == this, running=busy.get(w.id, 0),
    )  # fmt: skip
