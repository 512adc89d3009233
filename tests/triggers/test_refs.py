"""Local ref changes → events, against real git repositories in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.git import refs as git_refs
from tests.gitutil import commit_file, init_repo
from tests.gitutil import git as g
from triggers.events import Event
from triggers.refs import (
    JOB_BRANCH_PREFIX,
    MAX_COMMITS,
    MAX_PATHS,
    ZERO_SHA,
    diff_refs,
    scan,
    snapshot,
)

MAIN = "refs/heads/main"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", files={"README.md": "hello\n", "src/app.py": "x = 1\n"})


def run(repo: Path, last_seen: dict[str, str]) -> tuple[list[Event], dict[str, str]]:
    return scan(
        git_refs, repo_path=repo, repo_name="app", default_branch="main", last_seen=last_seen
    )


def summary(events: list[Event]) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.action, e.head_branch or e.branch) for e in events]


# --- snapshot and scan -------------------------------------------------------------


def test_snapshot_lists_branches_but_not_job_branches(repo: Path) -> None:
    main = g(repo, "rev-parse", "HEAD")
    g(repo, "branch", "feature")
    g(repo, "branch", "dispatcher/job-1")
    g(repo, "branch", "dispatcher/nested/job-2")
    g(repo, "tag", "v1")
    assert snapshot(git_refs, repo) == {MAIN: main, "refs/heads/feature": main}


def test_snapshot_reads_packed_refs(repo: Path) -> None:
    g(repo, "branch", "feature")
    before = snapshot(git_refs, repo)
    g(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "feature").exists()
    assert snapshot(git_refs, repo) == before


def test_first_scan_is_a_baseline_without_events(repo: Path) -> None:
    g(repo, "branch", "feature")
    events, seen = run(repo, {})
    assert events == []
    assert seen == snapshot(git_refs, repo)


def test_an_unchanged_repo_makes_no_events(repo: Path) -> None:
    _, seen = run(repo, {})
    assert run(repo, seen) == ([], seen)


# --- push on the default branch -----------------------------------------------------


def test_commits_on_the_default_branch_make_one_push(repo: Path) -> None:
    _, seen = run(repo, {})
    before = seen[MAIN]
    first = commit_file(repo, "src/app.py", "x = 2\n", "Fix the app\n\nLonger body.")
    after = commit_file(repo, "docs/guide.md", "# Guide\n", "Write a guide")
    events, new_seen = run(repo, seen)
    assert new_seen == {MAIN: after}
    [push] = events
    assert push.kind == "push"
    assert push.action is None
    assert push.source == "local"
    assert push.repo == "app"
    assert push.dedup_key == f"local:app:push:{MAIN}:{before}:{after}"
    assert push.branch == "main"
    assert push.head_branch is None
    assert push.sha == after
    assert push.before == before
    assert push.paths == ["docs/guide.md", "src/app.py"]
    assert push.author == "Test Author"
    assert push.text == "Fix the app\n\nLonger body.\n\nWrite a guide"
    payload = push.payload
    assert payload["ref"] == MAIN
    assert (payload["before"], payload["after"]) == (before, after)
    assert payload["created"] is False
    assert payload["deleted"] is False
    assert payload["forced"] is False
    assert [c["id"] for c in payload["commits"]] == [first, after]
    assert payload["commits"][0]["message"] == "Fix the app\n\nLonger body."
    assert payload["commits"][0]["author"] == {"name": "Test Author", "email": "author@example.com"}
    assert payload["commits"][0]["timestamp"].startswith("20")
    assert payload["head_commit"] == payload["commits"][-1]
    assert payload["repository"] == {"name": "app", "full_name": "app", "default_branch": "main"}
    assert payload["sender"] == {"login": "local"}


def test_catching_up_after_downtime_is_exactly_once(repo: Path) -> None:
    """Commits that landed while the daemon was down: one push, same key on every retry."""
    _, seen = run(repo, {})
    commit_file(repo, "a.txt", "1\n")
    commit_file(repo, "b.txt", "2\n")
    first, new_seen = run(repo, seen)
    # A crash before the new snapshot was stored: the next scan re-emits the same events.
    again, _ = run(repo, seen)
    assert [e.model_dump() for e in again] == [e.model_dump() for e in first]
    assert len(first) == 1
    assert len(first[0].payload["commits"]) == 2
    # Once the snapshot is stored, nothing more.
    assert run(repo, new_seen)[0] == []


def test_a_forced_move_is_marked_forced(repo: Path) -> None:
    base = g(repo, "rev-parse", "HEAD")
    commit_file(repo, "a.txt", "1\n", "to be dropped")
    _, seen = run(repo, {})
    g(repo, "reset", "-q", "--hard", base)
    after = commit_file(repo, "b.txt", "2\n", "the rewrite")
    [push] = run(repo, seen)[0]
    assert push.payload["forced"] is True
    assert push.paths == ["a.txt", "b.txt"]
    assert [c["id"] for c in push.payload["commits"]] == [after]


def test_moving_a_branch_back_is_forced_with_no_new_commits(repo: Path) -> None:
    base = g(repo, "rev-parse", "HEAD")
    commit_file(repo, "a.txt", "1\n")
    _, seen = run(repo, {})
    g(repo, "reset", "-q", "--hard", base)
    [push] = run(repo, seen)[0]
    assert push.payload["forced"] is True
    assert push.payload["commits"] == []
    assert push.payload["head_commit"] is None
    assert push.paths == ["a.txt"]
    assert push.text == "initial"  # no new commits: the head commit's message


def test_a_vanished_old_tip_still_makes_a_push(repo: Path) -> None:
    """The old tip was force-pushed away and garbage-collected while the daemon was down."""
    gone = "1234567890" * 4
    [push] = diff_refs(
        git_refs,
        repo_path=repo,
        repo_name="app",
        default_branch="main",
        old={MAIN: gone},
        new=snapshot(git_refs, repo),
    )
    assert push.before == gone
    assert push.payload["forced"] is True
    assert push.paths == ["README.md", "src/app.py"]  # everything at the new tip


# --- branches and pull requests ----------------------------------------------------


def test_a_new_branch_is_a_created_push_and_an_opened_pull_request(repo: Path) -> None:
    main = g(repo, "rev-parse", "HEAD")
    _, seen = run(repo, {})
    g(repo, "switch", "-q", "-c", "feature")
    commit_file(repo, "src/feature.py", "f = 1\n", "Add the feature\n\nIt does things.")
    after = commit_file(repo, "README.md", "hello feature\n", "Document the feature")
    events, _ = run(repo, seen)
    assert summary(events) == [("push", None, "feature"), ("pull_request", "opened", "feature")]
    push, pr = events

    assert push.payload["created"] is True
    assert push.before == ZERO_SHA
    assert push.payload["before"] == ZERO_SHA
    assert push.dedup_key == f"local:app:push:refs/heads/feature:{ZERO_SHA}:{after}"
    assert push.paths == ["README.md", "src/feature.py"]  # since it left main
    assert len(push.payload["commits"]) == 2

    assert pr.kind == "pull_request"
    assert pr.action == "opened"
    assert pr.branch == "main"  # the base
    assert pr.head_branch == "feature"
    assert pr.sha == after
    assert pr.before is None
    assert pr.paths == ["README.md", "src/feature.py"]
    assert pr.author == "Test Author"
    assert "It does things." in (pr.text or "")
    assert pr.dedup_key == f"local:app:pull_request.opened:refs/heads/feature:{ZERO_SHA}:{after}"
    assert pr.payload == {
        "action": "opened",
        "number": None,
        "pull_request": {
            "title": "Document the feature",
            "head": {"ref": "feature", "sha": after},
            "base": {"ref": "main", "sha": main},
            "html_url": None,
        },
        "repository": {"name": "app", "full_name": "app", "default_branch": "main"},
        "sender": {"login": "local"},
    }


def test_new_commits_on_a_branch_synchronize_its_pull_request(repo: Path) -> None:
    g(repo, "switch", "-q", "-c", "feature")
    commit_file(repo, "src/feature.py", "f = 1\n")
    _, seen = run(repo, {})
    before = seen["refs/heads/feature"]
    after = commit_file(repo, "docs/feature.md", "# Feature\n", "Docs for the feature")
    events, _ = run(repo, seen)
    assert summary(events) == [
        ("push", None, "feature"),
        ("pull_request", "synchronize", "feature"),
    ]
    push, pr = events
    assert push.payload["created"] is False
    assert push.paths == ["docs/feature.md"]  # the push: just the new commit
    assert pr.paths == ["docs/feature.md", "src/feature.py"]  # the pull request: all of it
    assert pr.before == before
    assert pr.payload["before"] == before
    assert pr.payload["after"] == after
    assert pr.payload["pull_request"]["title"] == "Docs for the feature"
    assert pr.dedup_key == f"local:app:pull_request.synchronize:refs/heads/feature:{before}:{after}"
    assert pr.text == "Docs for the feature"


def test_a_branch_at_the_default_tip_opens_an_empty_pull_request(repo: Path) -> None:
    main = g(repo, "rev-parse", "HEAD")
    _, seen = run(repo, {})
    g(repo, "branch", "empty")
    push, pr = run(repo, seen)[0]
    assert push.payload["commits"] == []
    assert push.payload["head_commit"] is None
    assert push.paths == []
    assert pr.paths == []
    assert pr.payload["pull_request"]["title"] == "initial"
    assert pr.payload["pull_request"]["head"] == {"ref": "empty", "sha": main}


def test_deleted_branches_make_no_events(repo: Path) -> None:
    g(repo, "branch", "feature")
    _, seen = run(repo, {})
    g(repo, "branch", "-D", "feature")
    events, new_seen = run(repo, seen)
    assert events == []
    assert "refs/heads/feature" not in new_seen


def test_job_branches_never_make_events(repo: Path) -> None:
    _, seen = run(repo, {})
    g(repo, "switch", "-q", "-c", "dispatcher/job-7")
    commit_file(repo, "agent.txt", "work\n")
    events, new_seen = run(repo, seen)
    assert events == []
    assert all(not ref.startswith(JOB_BRANCH_PREFIX) for ref in new_seen)
    # Even when a caller's snapshot includes one.
    job = g(repo, "rev-parse", "HEAD")
    events = diff_refs(
        git_refs,
        repo_path=repo,
        repo_name="app",
        default_branch="main",
        old=seen,
        new={**seen, JOB_BRANCH_PREFIX + "job-7": job},
    )
    assert events == []


def test_events_are_ordered_by_ref_and_deterministic(repo: Path) -> None:
    _, seen = run(repo, {})
    for branch in ("zeta", "alpha", "mid"):
        g(repo, "switch", "-q", "-c", branch, "main")
        commit_file(repo, f"{branch}.txt", branch)
    g(repo, "switch", "-q", "main")
    commit_file(repo, "main.txt", "main")
    events, _ = run(repo, seen)
    assert summary(events) == [
        ("push", None, "alpha"),
        ("pull_request", "opened", "alpha"),
        ("push", None, "main"),
        ("push", None, "mid"),
        ("pull_request", "opened", "mid"),
        ("push", None, "zeta"),
        ("pull_request", "opened", "zeta"),
    ]
    assert [e.model_dump() for e in run(repo, seen)[0]] == [e.model_dump() for e in events]


def test_packed_refs_then_a_commit_is_still_a_push(repo: Path) -> None:
    g(repo, "branch", "feature")
    g(repo, "pack-refs", "--all")
    _, seen = run(repo, {})
    after = commit_file(repo, "a.txt", "1\n")
    [push] = run(repo, seen)[0]
    assert push.sha == after
    g(repo, "pack-refs", "--all")  # packing again moves nothing
    assert run(repo, run(repo, seen)[1])[0] == []


def test_a_branch_without_common_history_reports_its_files_bounded(repo: Path) -> None:
    _, seen = run(repo, {})
    g(repo, "switch", "-q", "--orphan", "pages")  # an empty index and work tree
    site = repo / "site"
    site.mkdir()
    for i in range(MAX_PATHS + 5):
        (site / f"page{i:04}.html").write_text(f"{i}\n")
    g(repo, "add", "site")
    g(repo, "commit", "-q", "-m", "Publish the site")
    push, pr = run(repo, seen)[0]
    assert push.paths is not None
    assert len(push.paths) == MAX_PATHS
    assert push.paths[0] == "site/page0000.html"
    assert pr.paths == push.paths
    assert [c["message"] for c in push.payload["commits"]] == ["Publish the site"]


def test_a_push_lists_at_most_the_newest_commits(repo: Path) -> None:
    _, seen = run(repo, {})
    tip = seen[MAIN]
    tree = g(repo, "rev-parse", "HEAD^{tree}")
    for i in range(MAX_COMMITS + 3):
        tip = g(repo, "commit-tree", tree, "-p", tip, "-m", f"step {i}")
    g(repo, "update-ref", MAIN, tip)
    [push] = run(repo, seen)[0]
    messages = [c["message"] for c in push.payload["commits"]]
    assert len(messages) == MAX_COMMITS
    assert messages[0] == "step 3"
    assert messages[-1] == f"step {MAX_COMMITS + 2}"
    assert push.payload["head_commit"]["id"] == tip


def test_long_branch_names_still_make_bounded_stable_keys(repo: Path) -> None:
    _, seen = run(repo, {})
    branch = "/".join(["very-long-branch-name-part"] * 9)
    g(repo, "branch", branch)
    events = run(repo, seen)[0]
    assert len(events) == 2
    assert all(len(e.dedup_key) <= 300 for e in events)
    assert len({e.dedup_key for e in events}) == 2
    assert [e.dedup_key for e in run(repo, seen)[0]] == [e.dedup_key for e in events]
