"""The claim loop claims when something may have changed, not only on its fallback tick:
a raised ``max-parallel`` (``repo update``) claims the job it held back at once."""

from __future__ import annotations

from pathlib import Path

from dispatcher.lifecycle import JobState
from dispatcher.store.models import JobCreate, RepoUpdate
from tests.test_store_trips import World, make_world
from tests.waiting import wait_until


def test_raising_max_parallel_claims_the_waiting_job_at_once(tmp_path: Path) -> None:
    with make_world(tmp_path, claim_fallback_s=3600.0) as w:  # only a wake-up claims
        _held_back_job_runs_when_the_limit_rises(w, tmp_path)


def _held_back_job_runs_when_the_limit_rises(w: World, tmp_path: Path) -> None:
    w.service.repos.update("app", RepoUpdate(max_parallel=1))
    release = tmp_path / "release"
    hold = ["sh", "-c", f'while [ ! -e "{release}" ]; do sleep 0.02; done']
    first = w.service.jobs.submit(JobCreate(repo="app", prompt="holds the slot", command=hold))
    wait_until(lambda: w.store.job(first.id).state is JobState.RUNNING, "the first job to run")
    second = w.service.jobs.submit(JobCreate(repo="app", prompt="waits", command=["true"]))
    try:
        # The repo is full: the job stays queued (the submit's wake-up claims nothing).
        assert w.store.job(second.id).state is JobState.QUEUED
        w.service.repos.update("app", RepoUpdate(max_parallel=2))
        wait_until(lambda: second.id in w.ended, "the held-back job to run once the limit rose")
        assert w.store.job(first.id).state is JobState.RUNNING  # it did not wait for a slot
    finally:
        release.touch()
        wait_until(lambda: first.id in w.ended, "the first job to end")
