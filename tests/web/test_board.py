"""The board's columns (dispatcher/service/board.py) against a real SQLite store: which
column each finished job goes to, as issue 15 words it."""

from __future__ import annotations

from dispatcher.lifecycle import JobState
from dispatcher.service.board import Board
from dispatcher.store.database import Store
from dispatcher.store.models import Job, Repo
from tests.test_store import store, url  # noqa: F401 (fixtures: a migrated store)


def test_needs_review_is_succeeded_with_commits_and_done_takes_failed_ones(
    store: Store,  # noqa: F811
) -> None:
    repo = store.add_repo(Repo(name="app", path="/srv/app", default_branch="main"))
    assert repo.id is not None
    made: dict[str, int] = {}
    for name, state, commits in (
        ("queued", JobState.QUEUED, None),
        ("running", JobState.RUNNING, None),
        ("good", JobState.SUCCEEDED, 2),
        ("empty", JobState.SUCCEEDED, 0),
        ("failed", JobState.FAILED, 3),
        ("late", JobState.TIMED_OUT, 1),
        ("merged", JobState.MERGED, 2),
    ):
        job = Job(
            repo_id=repo.id, prompt=name, agent="command", base_ref="main",
            base_sha="0" * 40, target_branch="main", timeout_s=60, state=state,
            commits_ahead=commits,
        )  # fmt: skip
        added = store.add_job(job, branch_for=lambda jid, n=name: f"dispatcher/{jid}-{n}")
        assert added.id is not None
        made[name] = added.id
    columns = {c.name: sorted(j.prompt for j in c.jobs) for c in Board(store).columns()}
    assert columns == {
        "queued": ["queued"],
        "running": ["running"],
        "review": ["good"],
        "done": ["empty", "failed", "late", "merged"],
    }
    counts = {c.name: c.count for c in Board(store).columns()}
    assert counts == {"queued": 1, "running": 1, "review": 1, "done": 4}
