"""Access (dispatcher/service/access.py): bearer tokens into principals, and how far each
principal reaches a job, against a real SQLite store."""

from __future__ import annotations

import pytest

from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.jobs.tokens import JobTokens
from dispatcher.lifecycle import JobState
from dispatcher.service.access import ADMIN, Access, Principal, Reach
from dispatcher.store.database import Store
from dispatcher.store.models import Job, JobCreate, MergeRequest, Repo
from tests.test_store import store, url  # noqa: F401 (fixtures: a migrated store)

DAEMON_TOKEN = "the-daemon-token-for-access-tests"


def add_job(st: Store, repo_id: int, state: JobState, nonce: str | None, **fields: object) -> Job:
    job = Job(
        repo_id=repo_id, prompt="p", agent="command", base_ref="main", base_sha="0" * 40,
        target_branch="main", timeout_s=60, state=state, spawn_nonce=nonce, **fields,
    )  # fmt: skip
    return st.add_job(job, branch_for=lambda jid: f"dispatcher/{jid}-p")


@pytest.fixture
def world(store: Store) -> tuple[Access, dict[str, Job]]:  # noqa: F811
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    other = store.add_repo(Repo(name="other", path="/srv/other", default_branch="main"))
    assert repo.id is not None and other.id is not None
    parent = add_job(store, repo.id, JobState.RUNNING, "n1")
    jobs = {
        "parent": parent,
        "child": add_job(store, repo.id, JobState.SUCCEEDED, "n2", parent_id=parent.id),
        "stranger": add_job(store, repo.id, JobState.SUCCEEDED, "n3"),
        "ended": add_job(store, other.id, JobState.FAILED, "n4"),
    }
    return Access(store, DAEMON_TOKEN), jobs


def token_of(job: Job) -> str:
    assert job.id is not None and job.spawn_nonce is not None
    return JobTokens(DAEMON_TOKEN).mint(job.id, job.spawn_nonce)


def test_tokens_become_principals_or_one_line_refusals(
    world: tuple[Access, dict[str, Job]],
) -> None:
    access, jobs = world
    assert access.principal(DAEMON_TOKEN) is ADMIN
    parent = access.principal(token_of(jobs["parent"]))
    assert parent == Principal(
        job_id=jobs["parent"].id, repo_id=jobs["parent"].repo_id, repo="app",
        branch=jobs["parent"].branch,
    )  # fmt: skip
    for wrong in ("", "nope", DAEMON_TOKEN + "x", DAEMON_TOKEN[:-1], "dj1.999.mac"):
        with pytest.raises(Unauthorized, match=r"^wrong bearer token$"):
            access.principal(wrong)
    # Another run's token (a re-spawn changed the nonce), another daemon token's.
    assert jobs["parent"].id is not None
    with pytest.raises(Unauthorized, match=r"^wrong bearer token$"):
        access.principal(JobTokens(DAEMON_TOKEN).mint(jobs["parent"].id, "n0"))
    with pytest.raises(Unauthorized, match=r"^wrong bearer token$"):
        access.principal(JobTokens("another-daemon").mint(jobs["parent"].id, "n1"))
    # A real token of a job that no longer runs: refused, saying why.
    with pytest.raises(Unauthorized, match="is no longer valid: the job is failed"):
        access.principal(token_of(jobs["ended"]))
    # No daemon token at all (a Service built without one): nothing is accepted.
    with pytest.raises(Unauthorized):
        Access(access.store, None).principal(token_of(jobs["parent"]))


def test_how_far_a_principal_reaches_each_job(world: tuple[Access, dict[str, Job]]) -> None:
    access, jobs = world
    parent = access.principal(token_of(jobs["parent"]))
    expected = {
        "parent": Reach.READ,
        "child": Reach.ACT,
        "stranger": Reach.NONE,
        "ended": Reach.NONE,
    }
    for name, job in jobs.items():
        assert access.reach(parent, job) is expected[name], name
        assert access.reach(ADMIN, job) is Reach.ACT, name
    child_id, stranger_id = jobs["child"].id, jobs["stranger"].id
    assert child_id is not None and stranger_id is not None
    access.check_job(parent, child_id, act=True)
    access.check_job(ADMIN, 987654, act=True)  # no read: the use-case answers unknown ids
    with pytest.raises(Forbidden, match=r"may read job .* but not act on it"):
        access.check_job(parent, parent.job_id or 0, act=True)
    with pytest.raises(Forbidden, match=rf"^job {stranger_id} is outside the scope"):
        access.check_job(parent, stranger_id)
    with pytest.raises(NotFound):
        access.check_job(parent, 987654)
    assert access.listed_parent(parent) == parent.job_id
    assert access.listed_parent(ADMIN) is None


def test_what_a_job_token_may_create_and_merge(world: tuple[Access, dict[str, Job]]) -> None:
    access, jobs = world
    parent = access.principal(token_of(jobs["parent"]))
    made, parent_id = access.create(parent, JobCreate(repo="app", prompt="x"))
    assert (made.base, parent_id) == (jobs["parent"].branch, jobs["parent"].id)
    made, _ = access.create(parent, JobCreate(repo="app", prompt="x", base="main"))
    assert made.base == "main"  # asked for: kept (its merge is still refused into main)
    assert access.create(ADMIN, JobCreate(repo="app", prompt="x")) == (
        JobCreate(repo="app", prompt="x"), None,
    )  # fmt: skip
    with pytest.raises(Forbidden, match="in its own repo 'app' only"):
        access.create(parent, JobCreate(repo="other", prompt="x"))
    child_id = jobs["child"].id
    assert child_id is not None
    for into in (None, "main", "refs/heads/main"):  # the child's target is main
        with pytest.raises(Forbidden, match="may not merge into 'main'"):
            access.merge(parent, child_id, MergeRequest(into=into))
    access.merge(parent, child_id, MergeRequest(into="feature"))
    access.merge(ADMIN, child_id, MergeRequest())
    with pytest.raises(Forbidden, match="takes the daemon token"):
        access.admin(parent, "post events")
    access.admin(ADMIN, "post events")
    access.repo(parent, "app")
    with pytest.raises(Forbidden, match="reaches its own repo 'app' only"):
        access.repo(parent, "other")
