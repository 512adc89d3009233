"""Other nodes' repo writes, heard (docs/cluster.md, "Clones per node").

The store keeps every repo row of its node in a cache, dropped when it writes a repo
itself. With several daemons on one PostgreSQL database, another node's write (a setting
changed, a repo gone with its last clone) must drop it too: every repo write sends a
``NOTIFY`` on :data:`CHANNEL` in its transaction (delivered when it commits), and
:class:`RepoChanges` listens on a connection of its own and drops the cache at each one.
When its connection breaks it drops the cache (what was sent meanwhile is lost) and
connects again after a backoff (0.5 s, doubling to 30 s). SQLite has one daemon: nothing
to hear.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHANNEL = "dispatcher_repos"
APPLICATION_NAME = "worktree-dispatcher-repos"  # its connection, in pg_stat_activity


class RepoChanges:
    """A thread that calls ``changed`` at each repo write of any node (and once each time
    it starts listening: what was written before it did is not known)."""

    def __init__(self, conninfo: str, changed: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._changed = changed
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
                self._changed()
                first = str(exc).splitlines()[0] if str(exc) else ""
                log.warning("not hearing other nodes' repo changes (retrying in %.1f s): %s: %s",
                            backoff, type(exc).__name__, first)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(
            self._conninfo, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._changed()
            self.listening.set()
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=0.5):
                    self._changed()
            self.listening.clear()
