"""Access (dispatcher/service/access.py): bearer tokens into principals, and how far each
principal reaches a job, against a real SQLite store."""

from __future__ import annotations

import pytest

from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.jobs.tokens import JobTokens
from dispatcher.lifecycle import JobState
from dispatcher.service.access import ADMIN, Access, Principal, Reach, TeamReach
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
        branch=jobs["parent"].branch, root_id=jobs["parent"].id,
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
    # Into its own branch only: not another job's (nor a team's integration branch).
    access.merge(parent, child_id, MergeRequest(into=jobs["parent"].branch))
    access.merge(parent, child_id, MergeRequest(into=f"refs/heads/{jobs['parent'].branch}"))
    for into in ("feature", jobs["stranger"].branch, "dispatcher/team-1"):
        with pytest.raises(
            Forbidden, match=rf"may merge into its own branch .* only, not '{into}'"
        ):
            access.merge(parent, child_id, MergeRequest(into=into))
    access.merge(ADMIN, child_id, MergeRequest())
    access.merge(ADMIN, child_id, MergeRequest(into="feature"))
    with pytest.raises(Forbidden, match="takes the daemon token"):
        access.admin(parent, "post events")
    access.admin(ADMIN, "post events")
    access.repo(parent, "app")
    with pytest.raises(Forbidden, match="reaches its own repo 'app' only"):
        access.repo(parent, "other")


def test_a_follow_up_or_retry_still_reaches_the_children_of_its_chain(
    world: tuple[Access, dict[str, Job]],
) -> None:
    """The children belong to the chain's first run: a follow-up of the parent (and a
    retry of that) reaches, lists and merges them, and its own children join them."""
    access, jobs = world
    st = access.store
    first = jobs["parent"]
    assert first.id is not None
    again = add_job(st, first.repo_id, JobState.FAILED, "n5", followup_of=first.id)
    third = add_job(st, first.repo_id, JobState.RUNNING, "n6", retry_of=again.id)
    who = access.principal(token_of(third))
    assert (who.job_id, who.root_id) == (third.id, first.id)
    assert access.reach(who, jobs["child"]) is Reach.ACT
    assert access.reach(who, jobs["stranger"]) is Reach.NONE
    assert access.listed_parent(who) == first.id
    _, parent_id = access.create(who, JobCreate(repo="app", prompt="x"))
    assert parent_id == first.id
    access.merge(who, jobs["child"].id or 0, MergeRequest(into=third.branch))


@pytest.fixture
def team_world(store: Store) -> dict[str, Principal | Job]:  # noqa: F811
    """Team 1 (its lead, member of task 5, member of task 6) and team 2's member."""
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    access = Access(store, DAEMON_TOKEN)
    made: dict[str, Principal | Job] = {}
    for name, team, task in (("lead", 1, None), ("m5", 1, 5), ("m6", 1, 6), ("far", 2, 9)):
        job = add_job(store, repo.id, JobState.RUNNING, f"t-{name}", team_id=team, task_id=task)
        made[f"{name}_job"] = job
        made[name] = access.principal(token_of(job))
    made["loner"] = access.principal(token_of(add_job(store, repo.id, JobState.RUNNING, "lo")))
    made["admin"] = ADMIN
    return made


def test_a_team_members_token_reaches_its_own_team_only(
    team_world: dict[str, Principal | Job],
    store: Store,  # noqa: F811
) -> None:
    access = Access(store, DAEMON_TOKEN)
    who = {k: v for k, v in team_world.items() if isinstance(v, Principal)}
    jobs = {k: v for k, v in team_world.items() if isinstance(v, Job)}
    assert (who["lead"].team_id, who["lead"].task_id, who["lead"].member) == (1, None, "lead")
    assert (who["m5"].member, who["m5"].is_lead, who["loner"].member) == ("task:5", False, None)

    # How far each principal reaches team 1 and team 2.
    table = {
        "admin": (TeamReach.ADMIN, TeamReach.ADMIN),
        "lead": (TeamReach.LEAD, None),
        "m5": (TeamReach.MEMBER, None),
        "m6": (TeamReach.MEMBER, None),
        "far": (None, TeamReach.MEMBER),
        "loner": (None, None),
    }
    for name, (team1, team2) in table.items():
        assert access.team_reach(who[name], 1) is team1, name
        assert access.team_reach(who[name], 2) is team2, name

    # A team's jobs: read by every member of it, acted on by none (nor by the lead).
    for name in ("lead", "m5", "m6"):
        for job in ("lead_job", "m5_job", "m6_job"):
            assert access.reach(who[name], jobs[job]) >= Reach.READ, (name, job)
        assert access.reach(who[name], jobs["far_job"]) is Reach.NONE, name
        with pytest.raises(Forbidden, match=r"may read job .* but not act"):
            access.check_job(who[name], jobs["m6_job"].id or 0, act=True)
    assert access.reach(who["loner"], jobs["m5_job"]) is Reach.NONE

    # What each may do in team 1: None = allowed, else the start of the refusal.
    outside = "team 1 is outside the scope of"
    cases: dict[str, dict[str, str | None]] = {
        "admin": {"show": None, "lead": None, "task5": None, "task6": None},
        "lead": {"show": None, "lead": None, "task5": "for its own task only", "task6": "for"},
        "m5": {"show": None, "lead": "only team 1's lead may", "task5": None, "task6": "own task"},
        "m6": {"show": None, "lead": "only team 1's lead", "task5": "own task", "task6": None},
        "far": {"show": outside, "lead": outside, "task5": outside, "task6": outside},
        "loner": {"show": outside, "lead": outside, "task5": outside, "task6": outside},
    }
    for name, expect in cases.items():
        checks = {
            "show": lambda p: access.team(p, 1),
            "lead": lambda p: access.team(p, 1, lead=True, what="add tasks"),
            "task5": lambda p: access.own_task(p, 1, 5, "signal"),
            "task6": lambda p: access.own_task(p, 1, 6, "signal"),
        }
        for what, check in checks.items():
            refusal = expect[what]
            if refusal is None:
                check(who[name])
            else:
                with pytest.raises(Forbidden, match=refusal):
                    check(who[name])

    # Messages: the sender is the token's own; a token reads its own mailbox only.
    assert [access.sender(who[n], 1) for n in ("admin", "lead", "m5")] == [
        "person", "lead", "task:5",
    ]  # fmt: skip
    assert access.mailbox(who["m5"], 1, None) == "task:5"
    assert access.mailbox(who["m5"], 1, "task:5") == "task:5"
    assert access.mailbox(who["admin"], 1, None) == "person"
    assert access.mailbox(who["admin"], 1, "task:6") == "task:6"
    with pytest.raises(Forbidden, match=r"reads its own mailbox 'task:5' only, not 'lead'$"):
        access.mailbox(who["m5"], 1, "lead")
    with pytest.raises(Forbidden, match=outside):
        access.mailbox(who["far"], 1, None)
    assert (access.decider(who["lead"], 1), access.decider(ADMIN, 1)) == ("lead", "person")
    with pytest.raises(Forbidden, match="may not approve or reject plans: only team 1's lead"):
        access.decider(who["m5"], 1)

    # The team a tool acts on: given, or the token's own; the daemon token must name it.
    assert (access.own_team(who["m5"], None), access.own_team(who["m5"], 2)) == (1, 2)
    for name in ("admin", "loner"):
        with pytest.raises(Forbidden, match=r"^give team_id: .* is of no team$"):
            access.own_team(who[name], None)
    for name in ("lead", "m5", "far", "loner"):  # the daemon token's alone
        with pytest.raises(Forbidden, match="may not merge teams: that takes the daemon token"):
            access.admin(who[name], "merge teams")


def test_a_job_token_creates_at_most_its_limit_of_children(store: Store) -> None:  # noqa: F811
    """Counted over the chain (the first run's children), retries and follow-ups of a
    child not counted; the daemon token has no limit."""
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    access = Access(store, DAEMON_TOKEN, max_children=2)
    parent = add_job(store, repo.id, JobState.RUNNING, "cap")
    who = access.principal(token_of(parent))
    first = add_job(store, repo.id, JobState.FAILED, "c1", parent_id=parent.id)
    add_job(store, repo.id, JobState.SUCCEEDED, "c1r", parent_id=parent.id, retry_of=first.id)
    access.create(who, JobCreate(repo="app", prompt="x"))  # one made: one more allowed
    add_job(store, repo.id, JobState.QUEUED, "c2", parent_id=parent.id)
    with pytest.raises(Forbidden, match=r"has created 2 jobs, its limit \(DISPATCHER_MCP_MAX_"):
        access.create(who, JobCreate(repo="app", prompt="x"))
    access.create(ADMIN, JobCreate(repo="app", prompt="x"))
