"""Runs every repo's cron schedules on APScheduler and ingests what comes due.

One APScheduler job per (repo, cron line), with the line's :class:`CronTrigger`
(parsed by :func:`triggers.schedule.parse_cron`); the job store, the
background thread, its wake-ups when jobs change, and shutdown are
APScheduler 3's. The two triggers of a repo with the same cron line share its
job: the event is per (repo, cron) and matches every trigger with that line.

**The clock is injected.** APScheduler 3 reads the wall clock in
``_process_jobs`` (what is due, how long to sleep), in ``add_job`` (a job's
first run time) and in its executors (the misfire check), and has no hook to
replace it. So :class:`ClockedScheduler` overrides ``_process_jobs``, the one
method that decides what runs, with :meth:`ClockedScheduler.run_due`, which
takes ``now`` as an argument; every job is added with an explicit first run
time from the clock; executors are never used (APScheduler 3's do not pass a
job its fire time, and the event needs it). Overriding that one method is
less fragile than patching ``datetime`` in APScheduler's modules (global, and
also hit by its executors), and lets tests run a step at any time they name
(:meth:`Schedules.tick`) without waiting for the wall clock.

**Missed fire times** (the machine slept, the daemon was busy or stopped):

* they *coalesce*: one event, for the latest fire time due;
* the *grace time* (``Settings.schedule_grace_seconds``): a fire time later
  than that is dropped (logged) and the schedule waits for its next one;
  unset (the default), a fire time is caught up however late;
* *while the daemon was stopped*: the schedules armed before the scheduler
  starts (the daemon's start) count from the last fire time their repo has
  stored (``last_fires``), so what came due while down fires once at start.
  A schedule with nothing stored, and any schedule armed while the daemon
  runs (a new repo, a changed trigger file), counts from when it is armed.

A fire time is never dispatched twice: in one process each job moves past it
before it is ingested; across a restart its event's dedup key
(:func:`triggers.schedule.dedup_key`) is already stored, so a re-emitted tick
changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.debug import DebugExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from triggers.events import Event
from triggers.schedule import latest_due, next_fire, parse_cron, schedule_event

log = logging.getLogger(__name__)

# The longest sleep between two looks at the clock. A sleep's timeout runs on the
# monotonic clock, which stands still while the machine is suspended: waking at least
# once a minute catches up soon after a resume, and after the wall clock is set.
MAX_WAIT_SECONDS = 60.0
STOP_WAIT_SECONDS = 5.0
"""How long a stop waits for a fire under way (an ingest stuck on a busy database)
before it leaves the thread to end on its own: a daemon thread, it never holds up exit."""
_TICK = timedelta(microseconds=1)

Fire = Callable[[str, str, datetime], Event]  # (repo name, cron line, fire time) → ingested


class ClockedScheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler is untyped
    """APScheduler 3's background scheduler, with the time taken from ``clock``.

    Each job's ``args`` are ``(repo name, cron line)``; ``fire`` is called with
    them and the fire time, in the scheduler's thread (or the caller's, for
    :meth:`run_due`). Jobs always coalesce; ``grace`` is their
    ``misfire_grace_time``, checked here against the injected clock.
    """

    def __init__(self, clock: Callable[[], datetime], fire: Fire, grace: timedelta | None) -> None:
        super().__init__(
            timezone=UTC,
            # Never used (see the module docstring); a DebugExecutor starts no thread pool.
            executors={"default": DebugExecutor()},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": None if grace is None else grace.total_seconds(),
            },
            daemon=True,
        )
        self.clock = clock
        self._fire = fire
        self._run_lock = threading.Lock()  # one run_due at a time: ingests in fire order

    def run_due(self, now: datetime) -> list[Event]:
        """Fire every job due by ``now``, once, for its latest due fire time.

        Each due job first moves to its next fire time after ``now``; then the
        fires within the grace time are made, in (repo, cron) order, outside the
        job store's lock (a slow ingest does not hold up trigger file changes).
        Returns the events made; a fire that raises is logged and the others still go.
        """
        with self._run_lock:
            due: list[tuple[str, str, datetime]] = []
            with self._jobstores_lock:
                for store in self._jobstores.values():
                    for job in store.get_due_jobs(now):
                        fire = self._take(job, now)
                        store.update_job(job)
                        if fire is not None:
                            due.append((job.args[0], job.args[1], fire))
            fired = []
            for repo_name, cron, fire in sorted(due):
                try:
                    fired.append(self._fire(repo_name, cron, fire))
                except Exception:
                    log.exception("schedule %r of %s: the fire at %s failed", cron, repo_name, fire)
            return fired

    def _take(self, job: Job, now: datetime) -> datetime | None:
        """Move ``job`` past ``now``; its latest due fire time, None if later than the grace."""
        fire = latest_due(job.trigger, job.next_run_time - _TICK, now)
        assert fire is not None  # the store found it due: next_run_time <= now
        job._modify(next_run_time=next_fire(job.trigger, fire))
        grace = job.misfire_grace_time
        if grace is not None and now - fire > timedelta(seconds=grace):
            log.warning(
                "schedule %r of %s: the fire at %s is %s late, past the grace time: dropped",
                job.args[1], job.args[0], fire.isoformat(), now - fire,
            )  # fmt: skip
            return None
        return fire

    def shutdown(self, wait: bool = True, timeout: float = STOP_WAIT_SECONDS) -> None:
        """Stop, and join the thread for at most ``timeout`` seconds (APScheduler's
        own shutdown joins it with no limit)."""
        BlockingScheduler.shutdown(self, False)  # state stopped, the thread woken
        thread: threading.Thread = self._thread
        if wait:
            thread.join(timeout)
        if thread.is_alive():
            log.warning("schedules: a fire still under way at stop is left to end on its own")

    def _process_jobs(self) -> float | None:
        """APScheduler's loop step: run what is due by the clock; seconds until the next.

        Nothing it raises may end the thread (APScheduler's loop catches nothing):
        a failure is logged and the step is tried again a minute later."""
        try:
            return self._step()
        except Exception:
            log.exception("schedules: a step failed; trying again in %s s", MAX_WAIT_SECONDS)
            return MAX_WAIT_SECONDS

    def _step(self) -> float | None:
        if self.state == STATE_PAUSED:
            return None
        self.run_due(self.clock())
        with self._jobstores_lock:
            times = [t for s in self._jobstores.values() if (t := s.get_next_run_time())]
        if not times:
            return None  # no job: sleep until one is added (add_job wakes the thread)
        wait: float = (min(times) - self.clock()).total_seconds()
        return min(max(wait, 0.0), MAX_WAIT_SECONDS)


class Schedules:
    """The cron schedules of every repo, run by a :class:`ClockedScheduler`.

    ``ingest`` receives each schedule event; ``last_fires(repo name)`` gives the
    latest stored fire time of each of the repo's cron lines (used for the
    schedules armed before :meth:`start`, see the module docstring).
    Thread-safe: repos change from the API's and the watcher's threads.
    """

    def __init__(
        self,
        ingest: Callable[[Event], object],
        last_fires: Callable[[str], Mapping[str, datetime]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        grace: timedelta | None = None,
    ) -> None:
        self.ingest = ingest
        self.last_fires = last_fires
        self.clock = clock
        self.scheduler = ClockedScheduler(clock, self._fire, grace)
        self._crons: dict[str, list[str]] = {}  # per repo, in the order given
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the scheduler's thread; what is already due fires at once."""
        self.scheduler.start()

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """Stop the scheduler and join its thread: after the ingest under way, if any,
        waiting at most ``timeout`` seconds for it."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True, timeout=timeout)

    # ------------------------------------------------------------ repos

    def set_repo(self, repo_name: str, crons: Iterable[str]) -> None:
        """Replace ``repo_name``'s schedules; InvalidInput (and no change) if a cron is invalid.

        A kept cron line keeps its next fire time; a new one counts from now, or,
        before :meth:`start`, from the repo's last stored fire of that line.
        """
        wanted = list(dict.fromkeys(crons))
        parsed = {cron: parse_cron(cron) for cron in wanted}  # all valid, or no change
        with self._lock:
            for cron in self._crons.get(repo_name, []):
                if cron not in parsed:
                    self.scheduler.remove_job(_job_id(repo_name, cron))
            new = [c for c in parsed if self.scheduler.get_job(_job_id(repo_name, c)) is None]
            now = self.clock()
            fired = self._stored_fires(repo_name) if new and not self.scheduler.running else {}
            for cron in new:
                trigger = parsed[cron]
                self._add(repo_name, cron, trigger, next_fire(trigger, fired.get(cron, now)))
            if wanted:
                self._crons[repo_name] = wanted
            else:
                self._crons.pop(repo_name, None)

    def remove_repo(self, repo_name: str) -> None:
        self.set_repo(repo_name, [])

    def crons(self, repo_name: str) -> list[str]:
        """The repo's cron lines, in the order given."""
        with self._lock:
            return list(self._crons.get(repo_name, []))

    def next_fire_time(self) -> datetime | None:
        """The earliest pending fire time of all schedules (None: no schedule)."""
        times = [j.next_run_time for j in self.scheduler.get_jobs() if j.next_run_time]
        return min(times, default=None)

    # ------------------------------------------------------------ firing

    def tick(self, now: datetime | None = None) -> list[Event]:
        """Ingest every schedule due at ``now`` (default: the clock); the events made.

        The scheduler's thread does this on its own; tests call it to run a step
        at a chosen time, synchronously."""
        return self.scheduler.run_due(self.clock() if now is None else now)

    def _fire(self, repo_name: str, cron: str, fire: datetime) -> Event:
        event = schedule_event(repo_name, cron, fire)
        self.ingest(event)
        return event

    def _add(self, repo_name: str, cron: str, trigger: CronTrigger, first: datetime) -> None:
        self.scheduler.add_job(
            _noop,  # never called: ClockedScheduler.run_due calls Schedules._fire
            trigger,
            args=(repo_name, cron),
            id=_job_id(repo_name, cron),
            name=f"schedule {cron!r} of {repo_name}",
            next_run_time=first,
        )

    def _stored_fires(self, repo_name: str) -> Mapping[str, datetime]:
        try:
            return self.last_fires(repo_name)
        except Exception:  # the database: catching up is lost, the schedule is not
            log.exception("repo %s: cannot read its last schedule fires", repo_name)
            return {}


def _job_id(repo_name: str, cron: str) -> str:
    return f"{repo_name}\0{cron}"


def _noop(*_: Any) -> None:
    """The callable APScheduler's job needs; never called."""
