"""The hub's pushes (dispatcher/service/hub.py) on a database several nodes share: work in
progress is pushed for this node's running jobs only (their worktrees are in its clones),
and a merged job whose branch went with its merge owes the hub nothing (no error is
recorded on it). Real git repos (a bare hub, a clone with a job branch), a real store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from dispatcher.config import Settings
from dispatcher.events.trigger_files import TriggerFiles
from dispatcher.lifecycle import JobState
from dispatcher.service.hub import Hubs
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo, Worker
from dispatcher.store.workers import WorkerStore
from tests.gitutil import git, init_repo
from tests.test_store import branch_for, new_job


@pytest.fixture
def world(migrated_db_url: str, tmp_path: Path) -> Iterator[tuple[Store, Hubs, Path, Path, int]]:
    """(store, hubs of node "me", the clone, the bare hub, the repo id)."""
    clone = init_repo(tmp_path / "app")
    hub = tmp_path / "hub.git"
    git(tmp_path, "clone", "-q", "--bare", str(clone), str(hub))
    git(clone, "remote", "add", "hub", str(hub))
    store = Store(migrated_db_url)
    settings = Settings(state_dir=tmp_path / "state")
    settings.ensure_dirs()
    hubs = Hubs(settings, store, None, TriggerFiles(store))  # type: ignore[arg-type]  # no lock taken here
    repo = store.add_repo(Repo(name="app", path=str(clone), default_branch="main", hub="hub"))
    assert repo.id is not None
    yield store, hubs, clone, hub, repo.id
    store.close()


def _job(store: Store, repo_id: int, **fields: Any) -> int:
    job = store.add_job(new_job(repo_id), branch_for=branch_for)
    assert job.id is not None
    with store.writing() as s:
        s.exec(sa.update(Job).where(col(Job.id) == job.id).values(**fields))
    return job.id


def _worker(store: Store, node: str) -> int:
    row = WorkerStore(store).begin(
        Worker(name=node[:8], node=node, host="h", pid=1, state_dir="/s", api_url="http://x",
               slots=1)
    )  # fmt: skip
    assert row.id is not None
    return row.id


def test_work_in_progress_is_pushed_for_this_nodes_running_jobs_only(
    world: tuple[Store, Hubs, Path, Path, int], tmp_path: Path
) -> None:
    store, hubs, clone, hub, repo_id = world
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    hubs.node = me
    ids = {}
    for node in (me, other):
        worker = _worker(store, node)
        branch = f"dispatcher/{node[:8]}"
        worktree = tmp_path / f"wt-{node[:8]}"
        git(clone, "worktree", "add", "-q", "-b", branch, str(worktree), "main")
        (worktree / "wip.txt").write_text(f"{node}\n")
        ids[node] = _job(store, repo_id, state=JobState.RUNNING, worker_id=worker,
                         worktree=str(worktree), branch=branch)  # fmt: skip
    hubs.push_attempts()
    pushed = git(hub, "for-each-ref", "--format=%(refname)", "refs/dispatcher/attempts/")
    assert pushed.split() == [f"refs/dispatcher/attempts/{ids[me]}/1"]


def test_a_merged_job_whose_branch_went_with_its_merge_owes_the_hub_nothing(
    world: tuple[Store, Hubs, Path, Path, int],
) -> None:
    store, hubs, _clone, _hub, repo_id = world
    job_id = _job(store, repo_id, state=JobState.MERGED, branch="dispatcher/gone",
                  commits_ahead=1, head_sha="a" * 40)  # fmt: skip
    assert hubs._push_once(job_id) is True
    assert store.job(job_id).hub_error is None
    failed = _job(store, repo_id, state=JobState.SUCCEEDED, branch="dispatcher/lost",
                  commits_ahead=1, head_sha="b" * 40)  # fmt: skip
    hubs._push_once(failed)  # a finished job's branch that is gone: that is an error
    assert "is gone" in (store.job(failed).hub_error or "")
