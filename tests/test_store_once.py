"""Exactly once in the store: one job per (event, trigger), one resource per
``Idempotency-Key``, under real concurrency on a real SQLite file (threads, each
with its own :class:`Store`, released together at a barrier)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatcher.models import Event, Job, Repo
from dispatcher.store import Store, migrate

THREADS = 4


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    return url


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    st = Store(url)
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def stores(url: str) -> Iterator[list[Store]]:
    """One store (its own engines and connections) per thread: like separate processes."""
    made = [Store(url) for _ in range(THREADS)]
    try:
        yield made
    finally:
        for st in made:
            st.close()


def together(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``n`` threads released at once; re-raise the first error."""
    barrier = threading.Barrier(n, timeout=30)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    if errors:
        raise errors[0]


def a_repo(store: Store) -> int:
    repo = store.add_repo(Repo(name="r", path="/srv/r", default_branch="main"))
    assert repo.id is not None
    return repo.id


def a_job(repo_id: int, *, event_id: int | None = None, trigger: str | None = None) -> Job:
    return Job(
        repo_id=repo_id, prompt="fix it", agent="claude", base_ref="main", base_sha="0" * 40,
        target_branch="main", timeout_s=600.0, event_id=event_id, trigger=trigger,
    )  # fmt: skip


def an_event(store: Store, repo_id: int, key: str) -> int:
    event = store.add_event(Event(repo_id=repo_id, kind="manual", source="api", dedup_key=key))
    assert event is not None and event.id is not None
    return event.id


def test_concurrent_jobs_for_one_event_and_trigger_make_one(
    store: Store, stores: list[Store]
) -> None:
    """The second of two racing inserts returns the first job instead of failing on
    the unique index. Several rounds: each is a fresh race."""
    repo_id = a_repo(store)
    for round_ in range(8):
        event_id = an_event(store, repo_id, f"e-{round_}")
        got: list[int | None] = [None] * THREADS

        def make(i: int, event_id: int = event_id, got: list[int | None] = got) -> None:
            job = stores[i].add_job(
                a_job(repo_id, event_id=event_id, trigger="t"), branch_for=lambda jid: f"b/{jid}"
            )
            got[i] = job.id

        together(THREADS, make)
        made = [j.id for j in store.jobs(repo_id=repo_id, limit=500) if j.event_id == event_id]
        assert len(made) == 1, made
        assert got == made * THREADS, (got, made)
        job = store.job_for_event(event_id, "t")
        assert job is not None and job.branch == f"b/{job.id}"
