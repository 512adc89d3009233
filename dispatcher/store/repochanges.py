"""Other nodes' writes, heard (docs/cluster.md): repo writes and queued jobs.

The store keeps every repo row of its node in a cache, dropped when it writes a repo
itself. With several daemons on one PostgreSQL database, another node's write (a setting
changed, a repo gone with its last clone) must drop it too: every repo write sends a
``NOTIFY`` on :data:`CHANNEL` in its transaction (delivered when it commits). A job
queued by any node notifies :data:`QUEUED_CHANNEL` (a trigger, migration 0024), which
wakes this daemon's claim. :class:`RepoChanges` listens to both on one connection of its
own and calls each channel's handler at each notification. When its connection breaks
it calls every handler (what was sent meanwhile is lost: the cache is dropped, the claim
looks) and connects again after a backoff (0.5 s, doubling to 30 s). SQLite has one
daemon: nothing to hear.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

CHANNEL = "dispatcher_repos"
QUEUED_CHANNEL = "dispatcher_job_queued"
"""Notified (payload: the repo id) by the trigger ``job_queued_notify`` (migration 0024)."""
APPLICATION_NAME = "worktree-dispatcher-repos"  # its connection, in pg_stat_activity


class RepoChanges:
    """A thread that calls ``handlers[channel]`` at each notification on ``channel`` (and
    every handler once each time it starts listening, and when its connection breaks:
    what was sent while it did not listen is not known)."""

    def __init__(self, conninfo: str, handlers: Mapping[str, Callable[[], None]]) -> None:
        self._conninfo = conninfo
        self._handlers = dict(handlers)
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while a LISTEN is in place
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="repo-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as exc:
                self.listening.clear()
                self._all()
                first = str(exc).splitlines()[0] if str(exc) else ""
                log.warning("not hearing other nodes' writes (retrying in %.1f s): %s: %s",
                            backoff, type(exc).__name__, first)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(
            self._conninfo, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            for channel in self._handlers:
                conn.execute(f"LISTEN {channel}")
            self._all()
            self.listening.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    handler = self._handlers.get(note.channel)
                    if handler is not None:
                        handler()
            self.listening.clear()

    def _all(self) -> None:
        for handler in self._handlers.values():
            handler()
