"""Prune's choices at an injected ``now``: the real service on a real database and real git.

The jobs are made in the store and their branches in git directly (the runner is not
started), so their ages and histories can be anything: finished days ago, merged and
then committed to, discarded while the repository was out of reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import Settings
from dispatcher.durations import describe_age, parse_duration
from dispatcher.errors import RefMoved
from dispatcher.jobs.runner import Runner
from dispatcher.lifecycle import JobState
from dispatcher.service import Service
from dispatcher.store.database import Store, migrate
from dispatcher.store.models import Job, PruneRequest, RepoCreate
from tests.gitutil import commit_file, git, init_repo

S = JobState
NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


@dataclass
class World:
    service: Service
    store: Store
    repo: Path
    repo_id: int
    base: str

    def job(self, state: JobState, *, ago: timedelta, commits: int = 0, **fields: Any) -> Job:
        """A job that reached ``state`` ``ago`` before NOW, its branch ``commits`` ahead."""
        job = self.store.add_job(
            Job(
                repo_id=self.repo_id, prompt="p", agent="command", base_ref="main",
                base_sha=self.base, target_branch="main", timeout_s=60,
            ),
            branch_for=lambda jid: f"dispatcher/{jid}-p",
        )  # fmt: skip
        assert job.id is not None
        git(self.repo, "branch", job.branch, self.base)
        head = self.base
        for n in range(commits):
            head = git(self.repo, "commit-tree", f"{head}^{{tree}}", "-p", head, "-m", f"c{n}")
        git(self.repo, "update-ref", f"refs/heads/{job.branch}", head)
        when = NOW - ago
        path = [S.PREPARING, S.RUNNING]
        path += [state] if state not in (S.MERGED, S.DISCARDED) else [S.SUCCEEDED, state]
        current = S.QUEUED
        for step in path:
            extra = {"finished_at": when} if step in (S.SUCCEEDED, S.FAILED, S.TIMED_OUT) else {}
            if step in (S.MERGED, S.DISCARDED):
                extra = {"closed_at": when, "head_sha": head}
            if step is path[-1]:
                extra.update(fields)
            job = self.store.move(job.id, current, step, **extra)
            current = step
        return job

    def branch(self, job: Job) -> str:
        return git(self.repo, "for-each-ref", "--format=%(objectname)", f"refs/heads/{job.branch}")

    def state(self, job: Job) -> JobState:
        assert job.id is not None
        return self.store.job(job.id).state

    def prune(self, **req: Any) -> dict[int, str]:
        result = self.service.prune.run(PruneRequest(**req), now=NOW)
        return {j.id: j.action for j in result.jobs}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = Settings(state_dir=tmp_path / "state", pool_size=0, watch_files=False)
    settings.ensure_dirs()
    migrate(settings.db_url)
    store = Store(settings.db_url)
    service = Service(settings, store, Runner(settings, store))
    repo = init_repo(tmp_path / "app")
    service.repos.add(RepoCreate(path=str(repo), name="app"))
    repo_id = store.repo_by_name("app").id
    assert repo_id is not None
    yield World(service, store, repo, repo_id, git(repo, "rev-parse", "main"))
    service.intake.close()
    store.close()


def test_older_than_counts_from_when_the_job_finished(world: World) -> None:
    w = world
    old = w.job(S.FAILED, ago=timedelta(days=3))
    recent = w.job(S.FAILED, ago=timedelta(hours=1))
    assert w.prune(older_than="2d") == {old.id: "discard"}
    assert w.state(old) is S.DISCARDED and not w.branch(old)
    assert w.state(recent) is S.FAILED and w.branch(recent)
    assert w.prune(older_than="59m") == {recent.id: "discard"}


def test_commits_are_counted_in_git_now_not_as_recorded(world: World) -> None:
    """A job recorded without commits whose branch got one since is kept."""
    w = world
    job = w.job(S.CANCELED, ago=timedelta(days=1), commits=1)
    assert job.commits_ahead is None
    result = w.service.prune.run(PruneRequest(), now=NOW)
    (item,) = result.jobs
    assert (item.action, item.commits, item.done) == ("keep", 1, False)
    assert "`--state canceled` prunes it" in item.message and w.state(job) is S.CANCELED
    assert w.prune(states=[S.CANCELED]) == {job.id: "discard"}
    assert w.state(job) is S.DISCARDED


def test_a_merged_branch_goes_unless_it_moved_past_what_landed(world: World) -> None:
    w = world
    # Marked merged as its target already held it (no head recorded): the target has it.
    landed = w.job(S.MERGED, ago=timedelta(days=1), commits=1, merged_into="main", head_sha=None)
    git(w.repo, "merge", "-q", "--ff-only", landed.branch)
    squashed = w.job(S.MERGED, ago=timedelta(days=1), commits=2, merged_into="main")
    moved = w.job(S.MERGED, ago=timedelta(days=1), commits=1, merged_into="main")
    git(w.repo, "update-ref", f"refs/heads/{moved.branch}",
        git(w.repo, "commit-tree", "main^{tree}", "-p", w.branch(moved), "-m", "after"))  # fmt: skip
    result = w.service.prune.run(PruneRequest(states=[S.MERGED]), now=NOW)
    actions = {j.id: j.action for j in result.jobs}
    assert actions == {landed.id: "delete_branch", squashed.id: "delete_branch", moved.id: "keep"}
    assert not w.branch(landed) and not w.branch(squashed) and w.branch(moved)
    kept = next(j for j in result.jobs if j.id == moved.id)
    assert "moved since the merge" in kept.message


def test_a_discarded_jobs_leftover_branch_goes_unless_another_job_uses_it(world: World) -> None:
    w = world
    leftover = w.job(S.DISCARDED, ago=timedelta(days=1), commits=1)
    shared = w.job(S.DISCARDED, ago=timedelta(days=1))
    user = w.job(S.SUCCEEDED, ago=timedelta(days=1), commits=1)
    w.store.update(user.id or 0, branch=shared.branch)  # as a follow-up shares its parent's
    assert w.prune() == {leftover.id: "delete_branch"}
    assert not w.branch(leftover) and w.branch(shared)
    assert w.prune() == {}  # nothing left to tidy


def test_a_dry_run_changes_nothing(world: World) -> None:
    w = world
    jobs = [w.job(s, ago=timedelta(days=1)) for s in (S.FAILED, S.TIMED_OUT, S.CANCELED)]
    merged = w.job(S.MERGED, ago=timedelta(days=1), commits=1, merged_into="main")
    commit_file(w.repo, "x.txt", "x")
    result = w.service.prune.run(PruneRequest(dry_run=True), now=NOW)
    assert [(j.id, j.action, j.done) for j in result.jobs] == [
        *((j.id, "discard", False) for j in jobs), (merged.id, "delete_branch", False),
    ]  # fmt: skip
    assert result.summary == (
        "would prune 4 jobs; would remove 0 orphan worktrees (dry run: nothing changed)"
    )
    for job in [*jobs, merged]:
        assert w.state(job) is job.state and w.branch(job)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
        ("1d12h", 129600), ("1.5h", 5400), ("1w2d3h4m5s", 788645), (" 7D ", 604800),
    ],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7x", "-7d", "7 d", "1h1d", "1d1d", "0d", "0s0m", "1e3s", "7d!"]
)
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (60, "1m"), (7200, "2h"), (90000, "1d")]
)
def test_ages(seconds: float, text: str) -> None:
    assert describe_age(seconds) == text


def test_a_job_whose_repository_is_out_of_reach_is_kept_unless_asked(world: World) -> None:
    """Its commits cannot be counted: it may hold work, so only its state asked prunes it."""
    w = world
    job = w.job(S.FAILED, ago=timedelta(days=1), commits_ahead=0)  # as the runner records
    git(w.repo, "branch", "-f", job.branch, commit_file(w.repo, "later.txt", "work\n"))
    git(w.repo, "reset", "-q", "--hard", w.base)  # a commit made on its branch since
    away = w.repo.with_name("away")
    w.repo.rename(away)
    try:
        result = w.service.prune.run(PruneRequest(), now=NOW)
        (item,) = result.jobs
        assert (item.action, item.commits, w.state(job)) == ("keep", None, S.FAILED)
        assert "its commits are unknown" in item.message and "`--state failed`" in item.message
    finally:
        away.rename(w.repo)
    assert w.prune() == {job.id: "keep"}  # back in reach: the commit is counted, kept


def test_a_discarded_branch_committed_to_since_is_kept(world: World) -> None:
    """A discard that could not delete the branch (repo out of reach), then a commit on it."""
    w = world
    job = w.job(S.DISCARDED, ago=timedelta(days=1))
    later = git(w.repo, "commit-tree", f"{w.base}^{{tree}}", "-p", w.base, "-m", "later")
    git(w.repo, "update-ref", f"refs/heads/{job.branch}", later)
    result = w.service.prune.run(PruneRequest(), now=NOW)
    (item,) = result.jobs
    assert (item.action, item.done) == ("keep", False), item.message
    assert w.branch(job) == later
    # Where it was discarded, it goes.
    git(w.repo, "update-ref", f"refs/heads/{job.branch}", w.base)
    assert w.prune() == {job.id: "delete_branch"}
    assert not w.branch(job)


def test_a_branch_that_moves_after_counting_is_not_discarded(world: World) -> None:
    """Prune counts, then discards: a commit in between stops the discard, nothing lost."""
    w = world
    job = w.job(S.FAILED, ago=timedelta(days=1))
    assert job.id is not None
    later = git(w.repo, "commit-tree", f"{w.base}^{{tree}}", "-p", w.base, "-m", "later")
    git(w.repo, "update-ref", f"refs/heads/{job.branch}", later)
    with pytest.raises(RefMoved, match="moved since its commits were counted"):
        w.service.control.discard(job.id, expected_tip=w.base)
    assert w.state(job) is S.FAILED and w.branch(job) == later
