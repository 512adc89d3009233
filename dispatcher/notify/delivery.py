"""Delivery: the background worker that sends each notice to its targets, with retries.

:meth:`Notifier.notify` only enqueues (it never blocks and never raises), so a
notification can never delay or fail a job. Worker threads take work from one
time-ordered queue: a notice is first expanded into its (notice, target)
deliveries, each of which is tried (:func:`dispatcher.notify.send.send`) and,
when worth it, put back with a backoff. Every delivery that reaches a final
outcome (sent, or given up) is recorded as a :class:`Delivery`; when every
delivery of a notice has, ``settled`` is called, so the caller can keep a durable
"still owed" mark until then and notify again after a restart (``skip`` leaves
out the targets already done). Message ids are derived from the job, the state
and the target, so a delivery sent again carries the same ``webhook-id``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from dispatcher import logctx
from dispatcher.errors import InvalidInput
from dispatcher.notify.formats import USER_AGENT, build_request
from dispatcher.notify.notices import JobNotice
from dispatcher.notify.send import Outcome, send
from dispatcher.notify.targets import Target, TargetType, matches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """The final outcome of sending one notice to one target."""

    job_id: int
    target: TargetType
    url: str  # redacted: no userinfo, query values masked, Slack's secret path segment masked
    state: str
    ok: bool
    attempts: int
    status_code: int | None  # of the last attempt; None when no response came back
    error: str | None  # one line; never contains the webhook secret
    at: datetime  # UTC, when the outcome was reached
    message_id: str  # the webhook-id (for every type), stable across retries


@dataclass
class _Expand:
    """A notice waiting for its targets to be looked up."""

    notice: JobNotice
    occurred_at: datetime
    skip: frozenset[str] = frozenset()  # message ids (:func:`message_id_for`) already done


@dataclass
class _Batch:
    """The deliveries of one notice that have not reached a final outcome."""

    notice: JobNotice
    remaining: int


@dataclass
class _Attempt:
    """One (notice, target) delivery, with its state across retries."""

    notice: JobNotice
    target: Target
    message_id: str
    occurred_at: datetime
    attempts: int = 0
    batch: _Batch | None = None


def message_id_for(notice: JobNotice, target: Target) -> str:
    """The webhook-id of ``notice`` to ``target``: the same on every retry and after a
    restart, so receivers can drop a repeat."""
    digest = hashlib.sha256(f"{target.type} {target.url}".encode()).hexdigest()[:16]
    return f"msg_{notice.job_id}_{notice.state}_{digest}"


_Item = _Expand | _Attempt


class Notifier:
    """Background delivery of job notices, with retries.

    ``targets_for(notice)`` lists the targets configured for the notice's repo
    (global and per-repo); it is called on a worker thread, so it may read
    files. A notice goes to each target whose ``on`` matches (:func:`matches`).
    Each (notice, target) delivery is tried up to ``attempts`` times: connection
    errors, timeouts, 408, 429 and 5xx are retried after an exponential backoff
    with jitter (``backoff * 2**(n-1)``, at most ``max_backoff``, randomised
    between half and all of it), or after a numeric ``Retry-After`` (capped at
    ``max_backoff``). Other statuses, redirects to another host, and a secret
    that cannot be used are final. Retries wait in a time-ordered queue, so a
    failing endpoint never holds up other deliveries; ``workers`` threads send
    in parallel so a slow endpoint does not either.

    Each final outcome is passed to ``record`` (exceptions from it are logged),
    and once every delivery of a notice has one (or no target matched), the
    notice to ``settled``. ``stop`` drops whatever is still queued, with a logged
    warning: those notices are never settled.

    ``clock`` (monotonic seconds) and ``sleep`` are test hooks: when ``sleep``
    is given, a worker waiting for a retry calls ``sleep(seconds)`` instead of
    waiting on its condition variable, so a fake clock can make time pass.
    """

    def __init__(
        self,
        targets_for: Callable[[JobNotice], Iterable[Target]],
        record: Callable[[Delivery], None],
        *,
        settled: Callable[[JobNotice], None] | None = None,
        client: httpx.Client | None = None,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        workers: int = 4,
        max_pending: int = 10_000,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._targets_for = targets_for
        self._record_cb = record
        self._settled_cb = settled
        self._owns_client = client is None
        # Made at the first delivery (:meth:`_http`): an httpx client loads its CA bundle
        # (about 0.1 s of CPU), which a daemon that never notifies does not spend.
        self._client = client
        self._client_lock = threading.Lock()
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._workers = workers
        self._max_pending = max_pending
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Item]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # -- public API

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        with self._cond:
            if self._stopped:
                raise RuntimeError("a stopped Notifier cannot be started again")
            if self._threads:
                return
            for n in range(self._workers):
                thread = threading.Thread(target=self._run, name=f"notify-{n}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the workers; drop pending deliveries (logged). True if every worker ended.

        An attempt already in flight finishes (bounded by the request timeout)
        and is recorded if it was final; it is not retried.
        """
        with self._cond:
            self._stopped = True
            dropped = len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        if dropped:
            log.warning(
                "notifier stopping: %d pending notification(s) dropped "
                "(not settled: still owed, for the next start)",
                dropped,
            )
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        done = not any(thread.is_alive() for thread in threads)
        if done and self._owns_client and self._client is not None:
            self._client.close()
        return done

    def notify(self, notice: JobNotice, *, skip: Iterable[str] = ()) -> None:
        """Queue ``notice`` for delivery, except the deliveries whose message id
        (:func:`message_id_for`) is in ``skip``. Never blocks on the network, never raises."""
        try:
            with self._cond:
                if self._stopped:
                    log.warning("notifier stopped: notice for job %s dropped", notice.job_id)
                    return
                if len(self._heap) >= self._max_pending:
                    log.warning(
                        "notification queue full (%d): notice for job %s dropped",
                        self._max_pending,
                        notice.job_id,
                    )
                    return
                self._push_locked(
                    self._clock(), _Expand(notice, datetime.now(UTC), frozenset(skip))
                )
        except Exception:
            log.exception("could not queue a notification")

    # -- scheduling

    def _push_locked(self, due: float, item: _Item) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))
        self._cond.notify_all()

    def _schedule(self, item: _Item, delay: float) -> bool:
        with self._cond:
            if self._stopped:
                return False
            self._push_locked(self._clock() + delay, item)
            return True

    def _next_locked(self) -> _Item | None:
        while not self._stopped:
            if not self._heap:
                self._cond.wait()
                continue
            remaining = self._heap[0][0] - self._clock()
            if remaining <= 0:
                return heapq.heappop(self._heap)[2]
            if self._sleep is not None:
                self._cond.release()
                try:
                    self._sleep(remaining)
                finally:
                    self._cond.acquire()
            else:
                self._cond.wait(remaining)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next_locked()
                if item is None:
                    return
            notice = item.notice
            try:
                with logctx.bound(job_id=notice.job_id, repo=notice.repo):
                    self._process(item)
            except Exception:
                log.exception("notification worker error")

    # -- delivery

    def _process(self, item: _Item) -> None:
        if isinstance(item, _Expand):
            self._expand(item)
            return
        item.attempts += 1
        try:
            outcome = self._attempt(item)
        except Exception as exc:
            log.exception("notification attempt crashed")
            outcome = Outcome(False, False, None, f"internal error: {type(exc).__name__}")
        if outcome.ok or not outcome.retry or item.attempts >= self._attempts:
            self._finish(item, outcome)
            return
        delay = self._delay(item.attempts, outcome.retry_after)
        log.info(
            "notification to %s for job %s failed (%s); retry %d/%d in %.1fs",
            item.target.type,
            item.notice.job_id,
            outcome.error,
            item.attempts + 1,
            self._attempts,
            delay,
        )
        if not self._schedule(item, delay):
            log.warning(
                "notifier stopped: retry of the %s notification for job %s dropped",
                item.target.type,
                item.notice.job_id,
            )

    def _expand(self, item: _Expand) -> None:
        try:
            targets = list(self._targets_for(item.notice))
        except Exception:
            log.exception("could not list notification targets for job %s", item.notice.job_id)
            return
        chosen = [
            t
            for t in targets
            if matches(t, item.notice) and message_id_for(item.notice, t) not in item.skip
        ]
        if not chosen:
            self._settle(item.notice)
            return
        batch = _Batch(item.notice, len(chosen))
        for target in chosen:
            task = _Attempt(
                item.notice, target, message_id_for(item.notice, target), item.occurred_at,
                batch=batch,
            )  # fmt: skip
            if not self._schedule(task, 0.0):
                log.warning("notifier stopped: notice for job %s dropped", item.notice.job_id)
                return

    def _settle(self, notice: JobNotice) -> None:
        if self._settled_cb is None:
            return
        try:
            self._settled_cb(notice)
        except Exception:
            log.exception("could not mark the notice for job %s settled", notice.job_id)

    def _delay(self, attempts_done: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._max_backoff)
        base = min(self._max_backoff, self._backoff * 2.0 ** min(attempts_done - 1, 60))
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def _attempt(self, task: _Attempt) -> Outcome:
        try:
            request = build_request(
                task.target,
                task.notice,
                now=datetime.now(UTC),
                message_id=task.message_id,
                environ=self._environ,
                occurred_at=task.occurred_at,
            )
        except InvalidInput as exc:
            return Outcome(False, False, None, exc.message)
        return send(self._http(), request, timeout=self._timeout)

    def _http(self) -> httpx.Client:
        """The client deliveries are sent with, made at the first one."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout,
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                )
            return self._client

    def _finish(self, task: _Attempt, outcome: Outcome) -> None:
        target = task.target
        delivery = Delivery(
            job_id=task.notice.job_id,
            target=target.type,
            url=target.shown_url,
            state=task.notice.state,
            ok=outcome.ok,
            attempts=task.attempts,
            status_code=outcome.status,
            error=outcome.error,
            at=datetime.now(UTC),
            message_id=task.message_id,
        )
        if not outcome.ok:
            log.warning(
                "notification to %s %s for job %s failed after %d attempt(s): %s",
                delivery.target,
                delivery.url,
                delivery.job_id,
                delivery.attempts,
                delivery.error,
            )
        try:
            self._record_cb(delivery)
        except Exception:
            log.exception("could not record the notification outcome for job %s", delivery.job_id)
        batch = task.batch
        if batch is not None:
            with self._cond:
                batch.remaining -= 1
                done = batch.remaining == 0
            if done:
                self._settle(batch.notice)
