"""A bounded pool of daemon threads for the runner's per-job work (prepare, spawn, finish).

Unlike :class:`concurrent.futures.ThreadPoolExecutor`, its threads are daemon
threads: a daemon that stops leaves its agents running and does not wait for a
job half prepared (the next start recovers it). Threads start on demand, up to
``size``, and then stay, idle, for the next job: the number of threads does not
grow with the number of running agents.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task`` on a worker (it must catch its own errors: they are only logged)."""
        with self._lock:
            start = self._idle <= 0 and len(self._threads) < self.size
            if start:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
            else:
                self._idle -= 1  # an idle worker takes it (or it waits for one)
        self._tasks.put(task)
        if start:
            thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:
                log.exception("%s: a task failed", self.name)
            with self._lock:
                self._idle += 1

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._threads)
