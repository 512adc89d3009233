"""This daemon's worker on the job queue: procrastinate's, on PostgreSQL (docs/cluster.md).

procrastinate's :class:`~procrastinate.worker.Worker` runs on a thread of its own with its
own event loop: it registers in ``procrastinate_workers`` and sends a heartbeat every
``heartbeat_s`` seconds, which is how every node knows this one is alive. When it stops
on its own (the database went away: its heartbeat failed) it is started again after a
backoff, as a new queue worker (a new id, passed to ``on_registered``), until
:meth:`QueueWorker.stop`. Nothing here touches the daemon's own tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from dispatcher.errors import DispatcherError

log = logging.getLogger(__name__)

QUEUE = "dispatcher"
"""The queue this worker listens on (nothing is deferred to it yet: docs/cluster.md)."""

_RESTART_S = (0.5, 30.0)  # the backoff between restarts: first, most


class QueueWorker:
    def __init__(
        self,
        conninfo: str,
        *,
        name: str,
        heartbeat_s: float,
        timeout_s: float,
        on_registered: Callable[[int], None],
    ) -> None:
        self._conninfo = conninfo
        self._name = name
        self._heartbeat_s = heartbeat_s
        self._timeout_s = timeout_s
        self._on_registered = on_registered
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._first = threading.Event()
        self._error: BaseException | None = None
        self.queue_worker_id: int | None = None

    def start(self, timeout: float = 60.0) -> int:
        """Start the worker and return its queue worker id once it registered; raise
        :class:`DispatcherError` (one line) if it could not within ``timeout``."""
        self._thread = threading.Thread(target=self._main, name="queue-worker", daemon=True)
        self._thread.start()
        if not self._first.wait(timeout) or self.queue_worker_id is None:
            self.stop(timeout=2.0)
            raise DispatcherError(f"the job queue's worker did not start{_why(self._error)}")
        return self.queue_worker_id

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop ended already (a failed start)
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------ the worker's thread

    def _main(self) -> None:
        try:
            asyncio.run(self._supervise())
        except BaseException as exc:  # reported by start(), logged here
            self._error = exc
            log.exception("the job queue's worker ended")
        finally:
            self._first.set()

    async def _supervise(self) -> None:
        import procrastinate
        from procrastinate.worker import Worker

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        backoff = _RESTART_S[0]
        while not self._stop.is_set():
            connector = procrastinate.PsycopgConnector(
                conninfo=self._conninfo, min_size=1, max_size=4,
                kwargs={"application_name": "worktree-dispatcher-queue"},
            )  # fmt: skip
            app = procrastinate.App(connector=connector)
            # procrastinate's Worker has untyped methods (run, stop).
            worker: Any = Worker(
                app, queues=[QUEUE], name=self._name, concurrency=1,
                install_signal_handlers=False,
                update_heartbeat_interval=self._heartbeat_s,
                stalled_worker_timeout=self._timeout_s,
            )  # fmt: skip
            try:
                async with app.open_async():
                    run = asyncio.create_task(worker.run(), name="procrastinate worker")
                    stopping = asyncio.create_task(self._stop.wait())
                    registered = await self._registered(worker, run)
                    watch = asyncio.create_task(self._watch_row(app, worker))
                    if registered:
                        backoff = _RESTART_S[0]
                    await asyncio.wait({run, stopping, watch}, return_when=asyncio.FIRST_COMPLETED)
                    worker.stop()
                    stopping.cancel()
                    watch.cancel()
                    await asyncio.gather(run, return_exceptions=True)
                    if run.done() and not run.cancelled() and run.exception() is not None:
                        raise run.exception()  # type: ignore[misc]
            except Exception as exc:  # the database went away: start again after a while
                self._error = exc
                log.warning("the job queue's worker failed: %s: %s", type(exc).__name__, exc)
            if self._stop.is_set():
                break
            if not self._first.is_set():
                self._first.set()  # start() reports the failure
                return
            log.warning("the job queue's worker stopped; starting it again in %.1f s", backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, _RESTART_S[1])

    async def _watch_row(self, app: Any, worker: Any) -> None:
        """Return when the worker's row is gone: another node pruned it, taking this worker
        for dead (its heartbeats were late). procrastinate would go on beating into
        nothing; this worker leaves and joins again, under a new id. A failed check (the
        database away) is the heartbeat's to report, not this."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                rows = await app.connector.execute_query_all_async(
                    "SELECT id FROM procrastinate_workers WHERE id = %(id)s", id=worker.worker_id
                )
            except Exception:  # noqa: S112 - the database is away: checked again next beat
                continue
            if not rows:
                log.warning("queue worker %s was taken for dead by another node (its row is "
                            "gone): joining the queue again", worker.worker_id)  # fmt: skip
                return

    async def _registered(self, worker: object, run: asyncio.Task[None]) -> bool:
        """Wait until ``worker`` has its id (or ended); tell the daemon."""
        while getattr(worker, "worker_id", None) is None and not run.done():
            await asyncio.sleep(0.01)
        worker_id = getattr(worker, "worker_id", None)
        if worker_id is None:
            return False
        self.queue_worker_id = int(worker_id)
        try:
            await asyncio.to_thread(self._on_registered, self.queue_worker_id)
        except Exception:
            log.exception("recording the queue worker's id failed")
        self._first.set()
        return True


def _why(error: BaseException | None) -> str:
    """``": <the error's first line>"`` (psycopg's messages run over several lines, and
    procrastinate's wrap the cause), or nothing."""
    while error is not None and not str(error).strip() and error.__cause__ is not None:
        error = error.__cause__
    if error is None:
        return ""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f": {type(error).__name__}: {first}" if first else f": {type(error).__name__}"
