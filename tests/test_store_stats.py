"""The aggregate figures of /metrics (dispatcher/store/stats.py) on a real SQLite database:
histogram bounds, what counts as a spawn, event outcomes, delivery outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatcher.lifecycle import JobState
from dispatcher.store import stats
from dispatcher.store.database import Store
from dispatcher.store.models import Delivery, Event
from tests.test_store import add_job, add_repo, store, url  # noqa: F401 (fixtures)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ran(st: Store, job_id: int, *, claimed: float, started: float, finished: float | None) -> None:
    """Give a job its timestamps, in seconds after T0."""
    st.update(
        job_id,
        claimed_at=T0 + timedelta(seconds=claimed),
        started_at=T0 + timedelta(seconds=started),
        finished_at=None if finished is None else T0 + timedelta(seconds=finished),
    )


def test_histograms_count_each_bound_inclusively_and_only_what_ran(store: Store) -> None:  # noqa: F811
    repo = add_repo(store, "app")
    one, three, long, running, waiting = (add_job(store, repo) for _ in range(5))
    ran(store, one, claimed=0, started=0.5, finished=1.5)  # 1 s: at the bound 1
    ran(store, three, claimed=0, started=0.25, finished=3.25)
    ran(store, long, claimed=0, started=2, finished=2 + 10_000)  # past every bound
    ran(store, running, claimed=0, started=1, finished=None)  # no duration yet
    # Queued again after a lost run: its old start is before its new claim.
    ran(store, waiting, claimed=100, started=50, finished=None)

    durations = stats.job_durations(store, [1.0, 5.0])
    assert list(durations) == [("app", "claude")]
    h = durations[("app", "claude")]
    assert (h.at_most, h.count) == ((1, 2), 3)
    assert abs(h.total - (1 + 3 + 10_000)) < 0.01

    spawn = stats.spawn_latencies(store, [0.25, 0.5, 1.0])[("app",)]
    assert (spawn.at_most, spawn.count) == ((1, 2, 3), 4)  # not the re-queued one
    assert abs(spawn.total - (0.5 + 0.25 + 2 + 1)) < 0.01


def test_states_costs_events_and_deliveries_by_their_labels(store: Store) -> None:  # noqa: F811
    repo, other = add_repo(store, "app"), add_repo(store, "lib")
    done, failed, queued = (add_job(store, repo) for _ in range(3))
    for job_id, end in ((done, JobState.SUCCEEDED), (failed, JobState.FAILED)):
        store.move(job_id, JobState.QUEUED, JobState.PREPARING)
        store.move(job_id, JobState.PREPARING, JobState.RUNNING)
        store.move(job_id, JobState.RUNNING, end, cost_usd=0.5)
    assert stats.job_states(store) == {("app", "succeeded"): 1, ("app", "failed"): 1,
                                       ("app", "queued"): 1}  # fmt: skip
    assert stats.costs(store) == {("app", "claude"): 1.0}
    assert stats.repo_names(store) == ["app", "lib"]

    def event(key: str, matched: list[str], pending: list[str], repo_id: int = repo) -> int:
        row = store.add_event(
            Event(repo_id=repo_id, kind="manual", source="api", dedup_key=key,
                  matched=matched, pending_triggers=pending)
        )  # fmt: skip
        assert row is not None and row.id is not None
        return row.id

    made = event("made", ["t"], [])
    store.update(queued, event_id=made)
    event("checking", ["t"], ["t"])
    event("passed", ["t"], [])
    event("nothing", [], [], other)
    assert stats.events(store) == {
        ("app", "api", "job"): 1, ("app", "api", "pending"): 1, ("app", "api", "no_job"): 1,
        ("lib", "api", "unmatched"): 1,
    }  # fmt: skip

    for ok, target in ((True, "webhook"), (False, "webhook"), (True, "ntfy")):
        store.add_delivery(
            Delivery(job_id=done, target=target, url="http://x", state="succeeded", ok=ok,
                     attempts=1)
        )  # fmt: skip
    assert stats.deliveries(store) == {
        ("app", "webhook", "delivered"): 1, ("app", "webhook", "failed"): 1,
        ("app", "ntfy", "delivered"): 1,
    }  # fmt: skip
