"""dispatcher.jobs.workspace: copy/link from the checkout and setup scripts, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.jobs import workspace
from dispatcher.jobs.workspace import Workspace


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    (repo / ".git").mkdir(parents=True)
    tree.mkdir()
    (tree / ".git").write_text("gitdir: /elsewhere\n")
    return repo, tree


def test_copy_and_link_bring_files_and_skip_missing_or_present(dirs: tuple[Path, Path]) -> None:
    repo, tree = dirs
    (repo / ".env").write_text("A=1\n")
    (repo / "deps" / "pkg").mkdir(parents=True)
    (repo / "deps" / "pkg" / "x.js").write_text("x\n")
    (tree / "present.txt").write_text("tracked\n")
    (repo / "present.txt").write_text("mine\n")
    ws = Workspace(copy_paths=[".env", "missing", "present.txt"], link_paths=["deps"])
    notes = workspace.bring_files(ws, repo, tree)
    assert (tree / ".env").read_text() == "A=1\n" and not (tree / ".env").is_symlink()
    assert os.readlink(tree / "deps") == str((repo / "deps").resolve())
    assert (tree / "present.txt").read_text() == "tracked\n"  # never overwritten
    assert "copy missing: not in your checkout, skipped" in notes
    assert any("present.txt: already in the worktree" in n for n in notes)
    assert ws.never_commit() == [".env", "missing", "present.txt", "deps"]


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", ".git", "sub/.git/config", "out"])
def test_paths_leaving_the_repo_or_into_git_are_refused(
    dirs: tuple[Path, Path], tmp_path: Path, rel: str
) -> None:
    repo, tree = dirs
    (tmp_path / "secret").write_text("no\n")
    (repo / "out").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidInput):
        workspace.bring_files(Workspace(copy_paths=[rel]), repo, tree)
    with pytest.raises(InvalidInput):
        workspace.bring_files(Workspace(link_paths=[rel]), repo, tree)


def test_a_destination_leading_outside_the_worktree_is_refused(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, tree = dirs
    (repo / "conf").mkdir()
    (repo / "conf" / "a").write_text("a\n")
    (tmp_path / "elsewhere").mkdir()
    (tree / "conf").symlink_to(tmp_path / "elsewhere")  # a tracked symlink in the tree
    with pytest.raises(InvalidInput, match="leads outside"):
        workspace.bring_files(Workspace(copy_paths=["conf/a"]), repo, tree)
    assert not (tmp_path / "elsewhere" / "a").exists()


@pytest.mark.parametrize(
    ("command", "timeout", "message"),
    [
        # 30 s for the failing one: a loaded machine may take over half a second to
        # start it, which must not turn its exit 4 into a timeout.
        ("exit 4", 30.0, "setup failed with exit 4"),
        ("sleep 20", 0.5, "setup timed out after 0.5s"),
    ],
)
def test_run_script_reports_failure_and_timeout(
    dirs: tuple[Path, Path], tmp_path: Path, command: str, timeout: float, message: str
) -> None:
    _, tree = dirs
    log = tmp_path / "log"
    with pytest.raises(workspace.SetupFailed, match=message):
        workspace.run_script(
            "setup", command, worktree=tree, env=dict(os.environ), log_path=log,
            exit_file=tmp_path / "exit", timeout=timeout, grace=0.2,
        )  # fmt: skip
    assert log.read_text().startswith(f"[dispatcher] setup: {command}\n")


def test_run_script_runs_a_non_executable_script_with_sh(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, tree = dirs
    (tree / "setup.sh").write_text("echo from-script > made.txt\n")  # no x bit
    workspace.run_script(
        "setup", "setup.sh", worktree=tree, env=dict(os.environ), log_path=tmp_path / "log",
        exit_file=tmp_path / "exit", timeout=10,
    )  # fmt: skip
    assert (tree / "made.txt").read_text() == "from-script\n"
