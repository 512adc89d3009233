"""service.fetches: one fetch in flight per repo, bursts coalesced (real git, a bare remote)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.service.fetches import Fetches, shares
from dispatcher.store.models import Repo
from tests.gitutil import commit_file, git, init_repo


@pytest.mark.parametrize(
    ("started", "asked", "window", "shared"),
    [
        (None, 10.0, 5.0, False),  # never fetched
        (10.0, 10.0, 5.0, True),  # the same moment
        (6.0, 10.0, 5.0, True),  # within the window
        (5.0, 10.0, 5.0, True),  # at its edge
        (4.9, 10.0, 5.0, False),  # too old
        (12.0, 10.0, 0.0, True),  # started while this one waited for it
        (9.0, 10.0, 0.0, False),  # no window: only one it waited for
    ],
)
def test_shares(started: float | None, asked: float, window: float, shared: bool) -> None:
    assert shares(started, asked, window) is shared


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(tmp_path: Path) -> tuple[Repo, Path, Path]:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    repo = init_repo(tmp_path / "app")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    return Repo(id=1, name="app", path=str(repo), default_branch="main", fetch=True), repo, other


def test_a_burst_shares_one_fetch_and_a_later_job_fetches_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, path, other = setup(tmp_path)
    clock = Clock()
    settings = Settings(state_dir=tmp_path / "state", fetch_coalesce_seconds=5)
    fetches = Fetches(settings, lambda url: None, clock=clock)
    upstream = commit_file(other, "UP.md", "up\n")
    git(other, "push", "-q", "origin", "main")
    answers: list[tuple[str, str | None]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(fetches.base(repo, "main")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert fetches.fetched(1) == 1
    assert {sha for sha, _ in answers} == {upstream}
    clock.now += 3  # within the window: shared
    fetches.base(repo, "main")
    assert fetches.fetched(1) == 1
    clock.now += 10  # past it: a fetch of its own
    newer = commit_file(other, "UP2.md", "up\n")
    git(other, "push", "-q", "origin", "main")
    assert fetches.base(repo, "main")[0] == newer and fetches.fetched(1) == 2
    # The local branch with commits of its own wins over the remote's.
    git(path, "merge", "-q", "--ff-only", "origin/main")
    mine = commit_file(path, "MINE.md", "mine\n")
    clock.now += 10
    sha, note = fetches.base(repo, "main")
    assert sha == mine and note == f"fetched origin: the job starts from main ({mine[:12]})"


def test_no_fetch_asked_runs_no_git_fetch(tmp_path: Path) -> None:
    repo, path, _ = setup(tmp_path)
    repo.fetch = None
    fetches = Fetches(Settings(state_dir=tmp_path / "state"), lambda url: None)
    assert fetches.base(repo, "main") == (git(path, "rev-parse", "main"), None)
    assert fetches.fetched(1) == 0


def test_a_fetch_that_fails_is_one_line_and_never_raises(tmp_path: Path) -> None:
    repo, path, _ = setup(tmp_path)
    git(path, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    fetches = Fetches(Settings(state_dir=tmp_path / "state"), lambda url: None)
    sha, note = fetches.base(repo, "main")
    assert sha == git(path, "rev-parse", "main")
    assert note is not None and "\n" not in note
    assert note.startswith("fetch of origin failed: the remote repository was not found")
    shared = fetches.fetch(repo)  # within the window: the same answer, no second fetch
    assert shared == "fetch of origin failed: the remote repository was not found"
    assert fetches.fetched(1) == 1
    repo.fetch_remote = "nosuch"
    fresh = Fetches(Settings(state_dir=tmp_path / "state"), lambda url: None)
    assert fresh.fetch(repo) == "the repo has no remote 'nosuch' (its remotes: origin)"
