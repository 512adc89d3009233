"""The local sources wired to the real store and service, in process, with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.events.sources import Sources
from dispatcher.jobs.runner import Runner
from dispatcher.service import Service
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import RepoCreate
from tests.gitutil import commit_file, git, init_repo
from tests.waiting import wait_until
from triggers.schedule import schedule_event

CRON_YML = """\
version: 1
triggers:
  hourly:
    on: {schedule: [{cron: "0 * * * *"}]}
    agent: command-less
    prompt: "tick at ${{ event.fired_at }}"
agents:
  command-less: ["true"]
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Service, Sources, Store, Clock, Path]]:
    settings = Settings(state_dir=tmp_path / "state")
    settings.ensure_dirs()
    migrate(settings.db_url)
    store = Store(settings.db_url)
    runner = Runner(settings, store)  # not started: jobs stay queued, which is what we count
    service = Service(settings, store, runner)
    clock = Clock(datetime(2026, 3, 1, 10, 15, tzinfo=UTC))
    sources = Sources(settings, store, service.trigger_files, service.intake.ingest, clock=clock)
    service.repos.listener = sources
    repo = init_repo(tmp_path / "app", files={".dispatcher/triggers.yml": CRON_YML})
    yield service, sources, store, clock, repo
    sources.stop()
    service.intake.close()
    store.close()


@pytest.fixture
def armed(
    world: tuple[Service, Sources, Store, Clock, Path],
) -> tuple[Service, Sources, Store, Clock, Path]:
    """The world with ``app`` registered (its schedules armed) and the scheduler started
    paused: its thread runs nothing, the test ticks."""
    service, sources, _, _, repo = world
    service.repos.add(RepoCreate(path=str(repo), name="app"))
    sources.schedules.scheduler.start(paused=True)
    return world


def test_cron_fires_once_per_time_and_coalesces_after_sleep(
    armed: tuple[Service, Sources, Store, Clock, Path],
) -> None:
    _, sources, store, clock, _ = armed
    t0 = clock.now
    assert sources.schedules.tick(t0 + timedelta(minutes=30)) == []  # 10:45: not yet
    fired = sources.schedules.tick(datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC))
    assert [e.schedule for e in fired] == ["0 * * * *"]
    same_fire_time = datetime(2026, 3, 1, 11, 0, 30, tzinfo=UTC)
    assert sources.schedules.tick(same_fire_time) == []
    # The machine slept from 11:00 to 16:10: five missed hours coalesce into one event.
    after_sleep = sources.schedules.tick(datetime(2026, 3, 1, 16, 10, tzinfo=UTC))
    assert len(after_sleep) == 1
    assert after_sleep[0].payload["fired_at"].startswith("2026-03-01T16:00:00")
    jobs = store.jobs(limit=10)
    assert [j.trigger for j in jobs] == ["hourly", "hourly"]
    assert sorted(j.prompt for j in jobs) == [
        "tick at 2026-03-01T11:00:00+00:00",
        "tick at 2026-03-01T16:00:00+00:00",
    ]


def test_fire_times_missed_while_down_fire_once_at_start_and_never_twice(
    armed: tuple[Service, Sources, Store, Clock, Path],
) -> None:
    service, sources, store, _, _ = armed
    assert len(sources.schedules.tick(datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC))) == 1
    sources.stop()  # the daemon is down from 11:30 to 16:10
    repo_id = store.repo_by_name("app").id
    assert repo_id is not None
    assert store.last_schedule_fires(repo_id) == {
        "0 * * * *": datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    }

    def restart(now: datetime) -> Sources:
        again = Sources(
            sources.settings, store, service.trigger_files, service.intake.ingest, clock=Clock(now)
        )
        service.repos.listener = again
        again.start()
        assert again.ready.wait(30), "the start-up catch-up (on its own thread)"
        return again

    later = restart(datetime(2026, 3, 1, 16, 10, tzinfo=UTC))
    try:  # 12:00 ... 16:00 were missed: one event, for 16:00, at start
        wait_until(lambda: len(store.jobs(limit=10)) == 2, "the catch-up job")
        assert later.schedules.next_fire_time() == datetime(2026, 3, 1, 17, 0, tzinfo=UTC)
    finally:
        later.stop()
    assert sorted(j.prompt for j in store.jobs(limit=10)) == [
        "tick at 2026-03-01T11:00:00+00:00",
        "tick at 2026-03-01T16:00:00+00:00",
    ]
    # Started again at 16:20: 16:00 is stored, so it is not due again; and were it
    # emitted again, its dedup key would make it a no-op.
    again = restart(datetime(2026, 3, 1, 16, 20, tzinfo=UTC))
    try:
        assert again.schedules.next_fire_time() == datetime(2026, 3, 1, 17, 0, tzinfo=UTC)
        fire = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
        assert service.intake.ingest(schedule_event("app", "0 * * * *", fire)).duplicate
    finally:
        again.stop()
    assert len(store.jobs(limit=10)) == 2


def test_a_trigger_file_change_adds_and_removes_schedules(
    armed: tuple[Service, Sources, Store, Clock, Path],
) -> None:
    _, sources, store, _, repo = armed
    assert sources.schedules.crons("app") == ["0 * * * *"]
    half_hourly = CRON_YML.replace('"0 * * * *"', '"*/30 * * * *"')
    commit_file(repo, ".dispatcher/triggers.yml", half_hourly, "every half hour")
    sources.scan_refs("app")  # the default branch moved: the file is read again
    assert sources.schedules.crons("app") == ["*/30 * * * *"]
    fired = sources.schedules.tick(datetime(2026, 3, 1, 11, 0, 1, tzinfo=UTC))
    assert [e.schedule for e in fired] == ["*/30 * * * *"]  # 10:30 and 11:00: one event
    sources.repo_removed(store.repo_by_name("app"))  # what Service.remove_repo calls
    assert sources.schedules.crons("app") == []
    assert sources.schedules.next_fire_time() is None


def register_with_a_push_trigger(service: Service, repo: Path) -> None:
    """``app`` registered with one trigger on every push."""
    push_yml = CRON_YML.replace('{schedule: [{cron: "0 * * * *"}]}', "{push: {branches: ['**']}}")
    push_yml = push_yml.replace("tick at ${{ event.fired_at }}", "push ${{ event.ref }}")
    commit_file(repo, ".dispatcher/triggers.yml", push_yml, "push trigger")
    service.repos.add(RepoCreate(path=str(repo), name="app"))


def test_ref_scan_catches_up_once_and_ignores_job_branches(
    world: tuple[Service, Sources, Store, Clock, Path],
) -> None:
    service, sources, store, _, repo = world
    register_with_a_push_trigger(service, repo)
    assert sources.scan_refs("app") == []  # baseline taken at registration
    commit_file(repo, "a.txt", "a\n")
    commit_file(repo, "b.txt", "b\n")
    events = sources.scan_refs("app")
    assert [(e.kind, e.branch) for e in events] == [("push", "main")]
    assert sources.scan_refs("app") == []
    git(repo, "branch", "dispatcher/99-agent-work")  # the daemon's own job branches
    assert sources.scan_refs("app") == []
    assert [j.prompt for j in store.jobs(limit=10)] == ["push refs/heads/main"]


def test_an_event_taken_up_by_the_start_up_pass_as_it_is_stored_is_decided_once(
    world: tuple[Service, Sources, Store, Clock, Path],
) -> None:
    service, sources, store, _, repo = world
    register_with_a_push_trigger(service, repo)
    add_event = store.add_event
    resumed: list[int] = []

    def stored_then_resumed(*args: object, **kwargs: object) -> object:
        row = add_event(*args, **kwargs)  # type: ignore[arg-type]
        resumed.append(service.intake.resume_pending())  # the start-up pass, right then
        return row

    store.add_event = stored_then_resumed  # type: ignore[method-assign]
    commit_file(repo, "a.txt", "a\n")
    assert [e.kind for e in sources.scan_refs("app")] == ["push"]
    store.add_event = add_event  # type: ignore[method-assign]
    assert resumed == [0]  # an event of this daemon's: decided by the path that stored it
    [job] = store.jobs(limit=10)
    assert job.event_id is not None
    row = store.event(job.event_id)
    assert row.pending_triggers == []
    assert row.notes == ["trigger hourly: job 1"]  # decided once
