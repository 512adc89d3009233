"""The schedules on APScheduler with an injected clock: steps at chosen times, no waiting.

Most tests start the scheduler paused (APScheduler's own ``start(paused=True)``): its
thread then runs nothing, and :meth:`Schedules.tick` runs each step at the time the
test names. The thread tests run it unpaused on a clock the test moves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.events.schedules import Schedules
from tests.waiting import wait_until
from triggers.events import Event


def at(text: str) -> datetime:
    """'2024-03-09 23:59' (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def keys(events: list[Event]) -> list[str]:
    return [e.dedup_key for e in events]


class Clock:
    """The injected clock; each read is counted, so a test can wait for the thread's."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.reads = 0
        self._read = threading.Condition()

    def __call__(self) -> datetime:
        with self._read:
            self.reads += 1
            self._read.notify_all()
            return self.now

    def wait_reads(self, count: int) -> None:
        with self._read:
            assert self._read.wait_for(lambda: self.reads >= count, timeout=10)


class World:
    """A :class:`Schedules` whose ingest records events (and the thread that sent them)."""

    def __init__(self, now: datetime, *, grace: timedelta | None = None) -> None:
        self.clock = Clock(now)
        self.ingested: list[Event] = []
        self.threads: list[threading.Thread] = []
        self.arrived = threading.Event()
        self.stored: dict[str, dict[str, datetime]] = {}  # what the store would say
        self.schedules = Schedules(self._ingest, self._last_fires, clock=self.clock, grace=grace)

    def _ingest(self, event: Event) -> None:
        self.ingested.append(event)
        self.threads.append(threading.current_thread())
        self.arrived.set()

    def _last_fires(self, repo_name: str) -> Mapping[str, datetime]:
        return self.stored.get(repo_name, {})

    def set_repo(self, repo_name: str, crons: list[str], now: str) -> None:
        self.clock.now = at(now)
        self.schedules.set_repo(repo_name, crons)

    def tick(self, now: str) -> list[Event]:
        return self.schedules.tick(at(now))


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for world in made:
        world.schedules.stop()


class Make(Protocol):
    def __call__(self, now: str = ..., *, grace: timedelta | None = None) -> World: ...


@pytest.fixture
def make(worlds: list[World]) -> Make:
    def make(now: str = "2024-01-01 00:00", *, grace: timedelta | None = None) -> World:
        world = World(at(now), grace=grace)
        worlds.append(world)
        return world

    return make


def paused(world: World) -> World:
    world.schedules.scheduler.start(paused=True)
    return world


# --- firing at the time, once -------------------------------------------------------


def test_no_fire_before_the_first_due_time_and_then_one_per_fire(make: Make) -> None:
    w = paused(make())
    w.set_repo("app", ["0 * * * *"], "2024-01-01 10:00")  # exactly on a fire time
    assert w.tick("2024-01-01 10:00") == []  # what is past (or now) when armed never fires
    assert w.tick("2024-01-01 10:59:59") == []
    [event] = w.tick("2024-01-01 11:00")
    assert event.kind == "schedule"
    assert event.source == "local"
    assert event.action is None
    assert event.repo == "app"
    assert event.schedule == "0 * * * *"
    assert event.dedup_key == "schedule:app:0 * * * *:2024-01-01T11:00:00+00:00"
    assert event.payload == {
        "schedule": "0 * * * *",
        "fired_at": "2024-01-01T11:00:00+00:00",
        "repository": {"name": "app", "full_name": "app"},
    }
    assert w.ingested == [event]
    assert w.tick("2024-01-01 11:00:30") == []  # fired once per fire time
    assert keys(w.tick("2024-01-01 12:00:01")) == [
        "schedule:app:0 * * * *:2024-01-01T12:00:00+00:00"
    ]


def test_every_minute(make: Make) -> None:
    w = paused(make())
    start = at("2024-01-01 10:00:20")
    w.set_repo("app", ["* * * * *"], "2024-01-01 10:00:20")
    fired = []
    for second in range(0, 181, 10):  # three minutes in 10-second ticks
        fired += [
            e.payload["fired_at"] for e in w.schedules.tick(start + timedelta(seconds=second))
        ]
    assert fired == [
        "2024-01-01T10:01:00+00:00",
        "2024-01-01T10:02:00+00:00",
        "2024-01-01T10:03:00+00:00",
    ]


def test_daily_at_three_across_midnight(make: Make) -> None:
    w = paused(make())
    w.set_repo("app", ["0 3 * * *"], "2024-01-01 22:00")
    assert w.schedules.next_fire_time() == at("2024-01-02 03:00")
    assert w.tick("2024-01-02 00:00") == []
    assert w.tick("2024-01-02 02:59:59") == []
    assert keys(w.tick("2024-01-02 03:00:00.5")) == [
        "schedule:app:0 3 * * *:2024-01-02T03:00:00+00:00"
    ]
    assert w.schedules.next_fire_time() == at("2024-01-03 03:00")


def test_dedup_keys_are_stable_for_the_same_fire_time(make: Make) -> None:
    """Two Schedules (a daemon restarted) name the same fire time with the same key, so
    the store's unique dedup key makes the second a no-op."""
    first, second = paused(make()), paused(make())
    first.set_repo("app", ["*/5 * * * *"], "2024-01-01 10:00")
    second.set_repo("app", ["*/5 * * * *"], "2024-01-01 10:03")
    a = keys(first.tick("2024-01-01 10:07"))
    b = keys(second.tick("2024-01-01 10:06"))
    assert a == b == ["schedule:app:*/5 * * * *:2024-01-01T10:05:00+00:00"]


def test_long_names_still_make_valid_bounded_dedup_keys(make: Make) -> None:
    w, again = paused(make()), paused(make())
    repo = "r" * 290
    w.set_repo(repo, ["0 * * * *"], "2024-01-01 10:00")
    [event] = w.tick("2024-01-01 11:00")
    assert len(event.dedup_key) <= 300
    again.set_repo(repo, ["0 * * * *"], "2024-01-01 10:30")
    assert keys(again.tick("2024-01-01 11:00")) == [event.dedup_key]


# --- missed fire times: coalesce, grace, catch-up at start ---------------------------


def test_a_five_hour_sleep_coalesces_into_one_event_for_the_latest_time(make: Make) -> None:
    w = paused(make())
    w.set_repo("app", ["* * * * *", "0 * * * *", "0 3 * * *"], "2024-01-01 22:00:30")
    events = w.tick("2024-01-02 03:00:45")  # the laptop slept from 22:00 to 03:00
    assert [(e.schedule, e.payload["fired_at"]) for e in events] == [
        ("* * * * *", "2024-01-02T03:00:00+00:00"),
        ("0 * * * *", "2024-01-02T03:00:00+00:00"),
        ("0 3 * * *", "2024-01-02T03:00:00+00:00"),
    ]
    assert w.tick("2024-01-02 03:00:59") == []
    assert [e.schedule for e in w.tick("2024-01-02 03:01")] == ["* * * * *"]


def test_a_fire_time_later_than_the_grace_time_is_dropped(make: Make) -> None:
    w = paused(make(grace=timedelta(minutes=15)))
    w.set_repo("app", ["0 * * * *", "0 3 * * *"], "2024-01-01 22:00")
    # Woken at 03:20: the hourly 03:00 is 20 minutes late, dropped, and so is the daily.
    assert w.tick("2024-01-02 03:20") == []
    assert w.schedules.next_fire_time() == at("2024-01-02 04:00")
    # Woken 10 minutes after a fire time: within the grace, it fires (once).
    assert keys(w.tick("2024-01-02 04:10")) == ["schedule:app:0 * * * *:2024-01-02T04:00:00+00:00"]
    assert w.tick("2024-01-02 04:11") == []


def test_fire_times_missed_while_stopped_fire_once_at_start(make: Make) -> None:
    """Armed before the start, a schedule counts from its last stored fire: what came
    due while the daemon was down coalesces into one event."""
    w = make("2024-01-01 16:10")
    w.stored = {"app": {"0 * * * *": at("2024-01-01 11:00")}}  # the last run fired 11:00
    w.set_repo("app", ["0 * * * *", "*/30 * * * *"], "2024-01-01 16:10")  # */30: new
    paused(w)
    assert [(e.schedule, e.payload["fired_at"]) for e in w.tick("2024-01-01 16:10")] == [
        ("0 * * * *", "2024-01-01T16:00:00+00:00"),  # 12:00 ... 16:00 missed: one event
    ]  # the new line counts from now: its 16:00 was never its to fire
    assert [e.schedule for e in w.tick("2024-01-01 16:30")] == ["*/30 * * * *"]


def test_catch_up_at_start_respects_the_grace_time(make: Make) -> None:
    w = make("2024-01-01 16:40", grace=timedelta(minutes=30))
    w.stored = {"app": {"0 * * * *": at("2024-01-01 11:00")}}
    w.set_repo("app", ["0 * * * *"], "2024-01-01 16:40")
    paused(w)
    assert w.tick("2024-01-01 16:40") == []  # 16:00 is 40 minutes late: dropped
    assert w.schedules.next_fire_time() == at("2024-01-01 17:00")


def test_nothing_is_caught_up_for_a_schedule_armed_while_running(make: Make) -> None:
    """A new repo or a changed trigger file counts from now, even with fires stored."""
    w = paused(make("2024-01-01 16:10"))
    w.stored = {"app": {"0 * * * *": at("2024-01-01 11:00")}}
    w.set_repo("app", ["0 * * * *"], "2024-01-01 16:10")
    assert w.tick("2024-01-01 16:10") == []
    assert w.schedules.next_fire_time() == at("2024-01-01 17:00")


def test_a_failing_ingest_is_logged_and_the_other_schedules_still_fire(make: Make) -> None:
    w = paused(make())
    calls: list[str] = []

    def ingest(event: Event) -> None:
        calls.append(event.repo or "")
        if event.repo == "api":
            raise RuntimeError("database is locked")

    w.schedules.ingest = ingest
    w.set_repo("api", ["0 * * * *"], "2024-01-01 10:00")
    w.set_repo("web", ["0 * * * *"], "2024-01-01 10:00")
    assert [e.repo for e in w.tick("2024-01-01 11:00")] == ["web"]
    assert calls == ["api", "web"]
    assert w.tick("2024-01-01 11:00:30") == []  # the failed fire is not retried


# --- repos and their lines ------------------------------------------------------------


def test_set_repo_replaces_entries_and_keeps_the_next_fire_of_kept_ones(make: Make) -> None:
    w = paused(make())
    w.set_repo("app", ["* * * * *", "0 * * * *"], "2024-01-01 10:00")
    assert len(w.tick("2024-01-01 10:30")) == 1  # the every-minute one, at 10:30
    # Reload: the every-minute entry stays (next fire 10:31), the hourly one goes,
    # a new one starts counting from now.
    w.set_repo("app", ["* * * * *", "*/10 * * * *", "* * * * *"], "2024-01-01 10:45")
    assert w.schedules.crons("app") == ["* * * * *", "*/10 * * * *"]
    events = w.tick("2024-01-01 10:45")
    assert [(e.schedule, e.payload["fired_at"]) for e in events] == [
        ("* * * * *", "2024-01-01T10:45:00+00:00"),  # kept: 10:31..10:45 were due
    ]
    events = w.tick("2024-01-01 11:00")
    assert [(e.schedule, e.payload["fired_at"]) for e in events] == [
        ("* * * * *", "2024-01-01T11:00:00+00:00"),
        ("*/10 * * * *", "2024-01-01T11:00:00+00:00"),
    ]


def test_set_repo_with_an_invalid_cron_changes_nothing(make: Make) -> None:
    w = paused(make())
    w.set_repo("app", ["0 * * * *"], "2024-01-01 10:00")
    with pytest.raises(InvalidInput, match="'bad'"):
        w.set_repo("app", ["* * * * *", "bad"], "2024-01-01 10:00")
    assert w.schedules.crons("app") == ["0 * * * *"]
    assert [j.id for j in w.schedules.scheduler.get_jobs()] == ["app\0000 * * * *"]


def test_repos_are_independent_and_removable(make: Make) -> None:
    w = paused(make())
    w.set_repo("web", ["0 * * * *"], "2024-01-01 10:00")
    w.set_repo("api", ["0 * * * *"], "2024-01-01 10:00")
    events = w.tick("2024-01-01 11:00")
    assert [(e.repo, e.dedup_key) for e in events] == [
        ("api", "schedule:api:0 * * * *:2024-01-01T11:00:00+00:00"),
        ("web", "schedule:web:0 * * * *:2024-01-01T11:00:00+00:00"),
    ]
    w.schedules.remove_repo("api")
    w.schedules.remove_repo("never-added")
    assert [e.repo for e in w.tick("2024-01-01 12:00")] == ["web"]
    w.set_repo("web", [], "2024-01-01 12:00")  # no crons: the repo is gone
    assert w.schedules.crons("web") == []
    assert w.tick("2024-01-02 00:00") == []
    assert w.schedules.next_fire_time() is None
    assert w.schedules.scheduler.get_jobs() == []


def test_next_fire_time_is_the_earliest_pending_one(make: Make) -> None:
    w = paused(make())
    assert w.schedules.next_fire_time() is None
    w.set_repo("a", ["0 3 * * *"], "2024-01-01 10:00")
    w.set_repo("b", ["*/20 * * * *"], "2024-01-01 10:05")
    assert w.schedules.next_fire_time() == at("2024-01-01 10:20")
    w.tick("2024-01-01 10:30")
    assert w.schedules.next_fire_time() == at("2024-01-01 10:40")


# --- the scheduler's thread -----------------------------------------------------------


def test_the_thread_fires_at_the_clocks_time_not_before_and_stops(make: Make) -> None:
    w = make("2024-01-01 10:59:58")
    w.schedules.set_repo("app", ["0 * * * *"])
    w.schedules.start()
    reads = w.clock.reads
    w.clock.now = at("2024-01-01 10:59:59")
    w.schedules.scheduler.wakeup()
    w.clock.wait_reads(reads + 2)  # the thread looked (what is due, how long to sleep)
    assert w.ingested == []  # one second early: nothing
    w.clock.now = at("2024-01-01 11:00")
    w.schedules.scheduler.wakeup()
    assert w.arrived.wait(10)
    assert keys(w.ingested) == ["schedule:app:0 * * * *:2024-01-01T11:00:00+00:00"]
    [thread] = w.threads
    assert thread is not threading.current_thread()
    w.schedules.stop()
    assert not thread.is_alive()
    assert not w.schedules.scheduler.running
    w.schedules.stop()  # twice is harmless


def test_the_thread_sleeps_at_most_a_minute(make: Make) -> None:
    """Sleeps run on the monotonic clock, which stands still while the machine is
    suspended: the thread looks at the clock at least once a minute."""
    w = paused(make("2024-01-01 10:00"))
    w.set_repo("app", ["0 3 * * *"], "2024-01-01 10:00")
    w.schedules.scheduler.resume()  # running: _process_jobs computes its sleep
    assert w.schedules.scheduler._process_jobs() == 60.0
    w.set_repo("app", [], "2024-01-01 10:00")
    assert w.schedules.scheduler._process_jobs() is None  # no schedule: until one is added


def test_stop_without_start_is_harmless(make: Make) -> None:
    w = make()
    w.schedules.set_repo("app", ["0 * * * *"])
    w.schedules.stop()


def test_stop_does_not_wait_forever_for_a_stuck_ingest(make: Make) -> None:
    """An ingest stuck (a database busy for good) does not hold the daemon's stop."""
    w = make("2024-01-01 10:59:59")
    release = threading.Event()
    stuck = threading.Event()

    def hang(event: Event) -> None:
        stuck.set()
        release.wait(30)

    w.schedules.ingest = hang
    w.schedules.set_repo("app", ["0 * * * *"])
    w.schedules.start()
    w.clock.now = at("2024-01-01 11:00")
    w.schedules.scheduler.wakeup()
    assert stuck.wait(10)
    started = time.monotonic()
    w.schedules.stop(timeout=0.2)
    assert time.monotonic() - started < 5
    assert not w.schedules.scheduler.running
    release.set()


def test_a_failing_step_does_not_end_the_thread(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler's loop catches nothing: a clock (or job store) that raises once is
    logged, and the thread goes on firing."""
    w = make("2024-01-01 10:59:59")
    real = w.clock
    failures = [RuntimeError("clock broke")]

    def flaky() -> datetime:
        if failures:
            raise failures.pop()
        return real()

    w.schedules.scheduler.clock = flaky
    w.schedules.set_repo("app", ["0 * * * *"])
    with caplog.at_level("ERROR", logger="dispatcher.events.schedules"):
        w.schedules.start()
        wait_until(lambda: not failures and "a step failed" in caplog.text, "the failing step")
    real.now = at("2024-01-01 11:00")
    w.schedules.scheduler.wakeup()
    assert w.arrived.wait(10)
    assert keys(w.ingested) == ["schedule:app:0 * * * *:2024-01-01T11:00:00+00:00"]
    assert all(t.is_alive() for t in w.threads)
    w.schedules.stop()
