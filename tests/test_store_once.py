"""Exactly once in the store: one job per (event, trigger), one resource per
``Idempotency-Key``, under real concurrency on a real SQLite file and a real PostgreSQL
(threads, each with its own :class:`Store`, released together at a barrier)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from dispatcher.api.app import create_app
from dispatcher.api.middleware import Idempotency
from dispatcher.config import Settings
from dispatcher.jobs.runner import Runner
from dispatcher.service import Service
from dispatcher.store.database import AlreadyMade, Store
from dispatcher.store.models import (
    Event,
    EventCreate,
    IdempotencyKey,
    IssueCreate,
    Job,
    JobCreate,
    Repo,
    RepoCreate,
    utcnow,
)
from tests.gitutil import init_repo
from tests.together import together

THREADS = 4


@pytest.fixture
def url(migrated_db_url: str) -> str:
    """At the newest schema, on SQLite and on PostgreSQL (tests/pg.py)."""
    return migrated_db_url


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


# ---------------------------------------------------------------- Idempotency-Key


@pytest.fixture
def world(tmp_path: Path, url: str) -> Iterator[tuple[Service, Store, Path]]:
    """The real service on a real database; the runner is not started (jobs stay queued)."""
    settings = Settings(
        state_dir=tmp_path / "state", pool_size=0, watch_files=False, database_url=url
    )
    settings.ensure_dirs()
    store = Store(settings.db_url)
    service = Service(settings, store, Runner(settings, store))
    yield service, store, init_repo(tmp_path / "app")
    service.intake.close()
    store.close()


def key(service: Service, name: str, path: str) -> IdempotencyKey:
    return service.idempotency.key(name, "POST", path, f"hash of {name}")


def test_a_key_whose_answer_was_never_stored_makes_nothing_twice(
    world: tuple[Service, Store, Path],
) -> None:
    """Each creating use-case, called again with the key of a first call whose answer
    was never stored (the daemon died after the commit), answers with what the first
    made, as it is now, and makes nothing new."""
    service, store, repo_path = world
    add = RepoCreate(path=str(repo_path), name="app")
    repo = service.repos.add(add, idem=key(service, "r", "/repos"))
    assert service.repos.add(add, idem=key(service, "r", "/repos")).id == repo.id
    assert [r.id for r in store.repos()] == [repo.id]

    create = JobCreate(repo="app", prompt="once", command=["true"])
    job = service.jobs.submit(create, idem=key(service, "j", "/jobs"))
    assert service.jobs.submit(create, idem=key(service, "j", "/jobs")).id == job.id
    assert [j.id for j in store.jobs()] == [job.id]

    service.control.cancel(job.id)  # queued: canceled at once, so it can be retried
    path = f"/jobs/{job.id}/retry"
    first = service.jobs.retry(job.id, idem=key(service, "t", path))
    again = service.jobs.retry(job.id, idem=key(service, "t", path))
    assert (again.job.id, again.changed, again.message) == (
        first.job.id, True, f"job {job.id} retried as job {first.job.id}"
    )  # fmt: skip
    assert len(store.jobs()) == 2

    event = EventCreate(repo="app", kind="manual")  # no dedup key: only the key dedups
    ingested = service.events.post(event, idem=key(service, "e", "/events"))
    assert ingested.event_id is not None
    assert service.events.post(event, idem=key(service, "e", "/events")).event_id == (
        ingested.event_id
    )
    assert [e.id for e in store.events()] == [ingested.event_id]

    issue = IssueCreate(title="broken", body="it is")
    filed = service.issues.file("app", issue, idem=key(service, "i", "/repos/app/issues"))
    assert service.issues.file("app", issue, idem=key(service, "i", "/repos/app/issues")) == filed
    assert repo.id is not None and len(store.issues(repo.id)) == 1
    assert len(store.events()) == 2  # the issue's event, once


def test_racing_requests_with_one_key_make_one_job_without_the_api_lock(
    world: tuple[Service, Store, Path],
) -> None:
    """The database, not the API's per-key lock, makes it once: requests that all pass
    the early check meet in the job's write, and the losers answer with the winner."""
    service, store, repo_path = world
    service.repos.add(RepoCreate(path=str(repo_path), name="app"))
    create = JobCreate(repo="app", prompt="race", command=["true"])
    got: list[int | None] = [None] * THREADS

    def post(i: int) -> None:
        got[i] = service.jobs.submit(create, idem=key(service, "race", "/jobs")).id

    together(THREADS, post)
    made = [j.id for j in store.jobs()]
    assert len(made) == 1 and got == made * THREADS, (got, made)


def test_a_key_is_written_with_its_resource_or_not_at_all(store: Store) -> None:
    """The key's row is in the resource's transaction: a creating write that fails
    leaves neither; one that finds the key answered already writes nothing."""
    repo_id = a_repo(store)
    idem = IdempotencyKey("k", "POST", "/jobs", "h", not_before=utcnow() - timedelta(hours=1))
    with pytest.raises(sa.exc.IntegrityError):  # no such repo: the insert fails
        store.add_job(a_job(repo_id + 1), branch_for=lambda jid: f"b/{jid}", idem=idem)
    assert store.idempotent_get(idem) is None
    job = store.add_job(a_job(repo_id), branch_for=lambda jid: f"b/{jid}", idem=idem)
    row = store.idempotent_get(idem)
    assert row is not None and (row.resource_kind, row.resource_id, row.status) == (
        "job", job.id, None
    )  # fmt: skip
    with pytest.raises(AlreadyMade) as made:
        store.add_job(a_job(repo_id), branch_for=lambda jid: f"b/{jid}", idem=idem)
    assert made.value.resource_id == job.id
    assert [j.id for j in store.jobs()] == [job.id]
    store.idempotent_answer(idem, 201, b'{"id": 1}', "application/json")
    row = store.idempotent_get(idem)
    assert row is not None and (row.status, row.body, row.resource_id) == (
        201, b'{"id": 1}', job.id
    )  # fmt: skip
    # Expired: the key is free again (and its old row goes).
    later = IdempotencyKey("k", "POST", "/jobs", "h", not_before=utcnow() + timedelta(seconds=1))
    assert store.idempotent_get(later) is None
    second = store.add_job(a_job(repo_id), branch_for=lambda jid: f"b/{jid}", idem=later)
    assert second.id != job.id


def test_concurrent_keyed_requests_run_one_at_a_time_and_leave_no_lock_behind(
    world: tuple[Service, Store, Path],
) -> None:
    """Through the real app in process: five requests with one key make one job, and
    the per-key lock goes with its last user (no lock kept per key ever seen)."""
    service, store, repo_path = world
    service.repos.add(RepoCreate(path=str(repo_path), name="app"))
    app = create_app(service, "t" * 32)
    body = {"repo": "app", "prompt": "x", "command": ["true"]}

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer " + "t" * 32}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            keyed = [
                client.post("/jobs", json=body, headers={**headers, "Idempotency-Key": f"k{i % 2}"})
                for i in range(6)
            ]
            return list(await asyncio.gather(*keyed))

    answers = asyncio.run(send_all())
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 2  # one job per key
    assert len(store.jobs()) == 2
    layer: Any = app.middleware_stack
    while not isinstance(layer, Idempotency):
        layer = layer.app
    assert layer._locks == {}
