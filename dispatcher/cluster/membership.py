"""This daemon as a worker of its database (docs/cluster.md), from start to stop.

:meth:`Membership.join` records the start (a ``worker`` row: every row still marked running
is a killed daemon's, since the caller holds the database for one daemon) and, on
PostgreSQL, starts its queue worker (:class:`~dispatcher.cluster.queue.QueueWorker`),
whose heartbeats say it is alive. :meth:`Membership.leave` stops both. Jobs claimed by
this daemon carry its worker id (:attr:`Membership.worker_id`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from datetime import timedelta

from dispatcher.cluster.node import node_id
from dispatcher.cluster.queue import QueueWorker
from dispatcher.config import Settings
from dispatcher.errors import NotFound
from dispatcher.store.database import Store
from dispatcher.store.models import Worker, WorkerPublic
from dispatcher.store.workers import WorkerStore

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.rows = WorkerStore(store)
        self._store_node = store.node
        self._conninfo = store.backend.queue_conninfo()
        self._queue: QueueWorker | None = None
        self.worker_id: int | None = None

    @functools.cached_property
    def node(self) -> str:
        """This state dir's node id: the same for each of its starts (the store's, when
        the daemon gave it one: read once)."""
        return self._store_node or node_id(self.settings.node_id_file)

    @property
    def owner(self) -> str | None:
        """The node whose rows this start resumes (docs/cluster.md): its own on
        PostgreSQL; on SQLite None, every row: its database is its state dir's, whatever
        node ids its starts had (a ``node-id`` deleted makes a new node, not new rows)."""
        return self.node if self._conninfo is not None else None

    @property
    def name(self) -> str:
        return self.settings.worker_name or socket.gethostname()

    def join(self) -> int:
        """Record this daemon's start and join the queue (PostgreSQL); its worker id.
        Raises :class:`~dispatcher.errors.DispatcherError` when the queue cannot be joined
        (the row is marked stopped again)."""
        me = Worker(
            name=self.name, node=self.node, host=socket.gethostname(), pid=os.getpid(),
            state_dir=str(self.settings.state_dir),
            api_url=(self.settings.advertise_url or self.settings.api_url).rstrip("/"),
            slots=self.settings.max_parallel,
        )  # fmt: skip
        row = self.rows.begin(me)
        assert row.id is not None
        self.worker_id = worker_id = row.id
        if self._conninfo is not None:
            self._queue = QueueWorker(
                self._conninfo, name=f"{self.name}#{worker_id}",
                heartbeat_s=self.settings.worker_heartbeat_seconds,
                timeout_s=self.settings.worker_timeout_seconds,
                on_registered=lambda qid: self.rows.joined_queue(worker_id, qid),
            )  # fmt: skip
            try:
                qid = self._queue.start()
            except Exception:
                self._queue = None
                self.rows.stopped(worker_id)
                raise
            log.info("worker %s (%s) joined the job queue as queue worker %s",
                     worker_id, self.name, qid)  # fmt: skip
        return worker_id

    def leave(self) -> None:
        """Stop the queue worker and mark the row stopped; never raises (a database
        gone at shutdown leaves the row running: the next start marks it stopped)."""
        if self._queue is not None:
            self._queue.stop()
            self._queue = None
        if self.worker_id is not None:
            try:
                self.rows.stopped(self.worker_id)
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                log.error("could not mark worker %s stopped: %s: %s", self.worker_id,
                          type(exc).__name__, first)  # fmt: skip

    def listed(self, *, everyone: bool = False) -> list[WorkerPublic]:
        """``GET /workers``: the workers running (``everyone``: and those stopped)."""
        timeout = timedelta(seconds=self.settings.worker_timeout_seconds)
        return self.rows.listed(this=self.worker_id, timeout=timeout, everyone=everyone)

    def show(self, worker_id: int) -> WorkerPublic:
        for w in self.listed(everyone=True):
            if w.id == worker_id:
                return w
        raise NotFound(f"no worker with id {worker_id}")
