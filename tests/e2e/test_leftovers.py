"""What the daemon commits for an agent that exits with work uncommitted: not a 200 MB
file, not a file the ignore rules match; the rest is committed (real daemon, real agent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.daemon_fixture import Daemon
from tests.gitutil import commit_file, git, init_repo

Agent = Callable[[str, str], str]


def test_leftovers_over_the_size_limit_or_ignored_are_not_committed(
    daemon: Daemon, repo: Path, agent: Agent
) -> None:
    commit_file(repo, ".gitignore", "secrets.env\n")
    name = daemon.add_repo(repo)
    script = agent(
        "messy.sh",
        "truncate -s 200M big.bin\n"
        "echo TOKEN=hunter2 > secrets.env && git add -f secrets.env\n"
        "echo work > work.txt\n"
        "mkdir -p src && echo changed > src/app.py\n",
    )
    job = daemon.wait(daemon.submit(name, command=[script])["id"])

    assert job["state"] == "failed", job
    error = job["error"]
    assert "\n" not in error
    assert "over the 50 MB limit for automatic commits: big.bin (200 MB)" in error
    assert "DISPATCHER_MAX_LEFTOVER_FILE_MB" in error
    assert "secrets.env" not in error  # not a failure: named in the log
    files = git(repo, "ls-tree", "-r", "--name-only", job["branch"]).splitlines()
    assert "big.bin" not in files
    assert "secrets.env" not in files
    assert {"work.txt", "src/app.py"} <= set(files)
    assert git(repo, "show", f"{job['branch']}:src/app.py") == "changed"
    worktree = Path(job["worktree"])
    assert (worktree / "big.bin").stat().st_size == 200 * 1024 * 1024  # left where it was
    assert (worktree / "secrets.env").read_text() == "TOKEN=hunter2\n"
    log = daemon.api.get(f"/jobs/{job['id']}/log", params={"tail": 4096}).text
    assert "ignore rules match (left in the worktree): secrets.env" in log
    assert "big.bin (200 MB)" in log

    # Discarding the job snapshots the worktree under the same limit: not the 200 MB file.
    (worktree / "notes.txt").write_text("the user's edit after the job\n")
    daemon.cli("discard", str(job["id"]))
    ref = f"refs/dispatcher/released/{job['id']}"
    saved = git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()
    assert "notes.txt" in saved and "big.bin" not in saved and "secrets.env" not in saved
    log = daemon.api.get(f"/jobs/{job['id']}/log", params={"tail": 4096}).text
    assert f"not saved in {ref}, deleted with the worktree" in log
    assert "over the size limit for automatic commits: big.bin (200.0 MB)" in log


def test_a_repo_sets_its_own_leftover_limit_in_its_trigger_file(
    daemon: Daemon, tmp_path: Path, agent: Agent
) -> None:
    triggers = (
        "version: 1\nmax-leftover-file-mb: 1\n"
        "triggers:\n  manual:\n    on: manual\n    prompt: hi\n"
    )
    repo = init_repo(
        tmp_path / "r", files={"README.md": "hi\n", ".dispatcher/triggers.yml": triggers}
    )
    name = daemon.add_repo(repo)
    script = agent("two.sh", "truncate -s 2M two.bin\necho small > small.txt\n")
    job = daemon.wait(daemon.submit(name, command=[script])["id"])
    assert job["state"] == "failed", job
    assert "over the 1 MB limit for automatic commits: two.bin (2 MB)" in job["error"]
    assert "max-leftover-file-mb" in job["error"]
    files = git(repo, "ls-tree", "-r", "--name-only", job["branch"]).splitlines()
    assert "small.txt" in files and "two.bin" not in files
