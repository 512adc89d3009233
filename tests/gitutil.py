"""Real-git helpers for tests: make repositories and commits in ``tmp_path``.

They run ``git`` directly (not through ``dispatcher.git``) so that tests check
the git package against git itself. The caller's environment must provide a git
identity (the test fixtures set ``GIT_AUTHOR_*``/``GIT_COMMITTER_*``).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    """Run ``git *args`` in ``cwd``; its stdout stripped. Fails loudly with git's stderr."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} exited {proc.returncode} in {cwd}:\n{proc.stderr}{proc.stdout}"
        )
    return proc.stdout.strip()


def init_repo(path: Path, *, branch: str = "main", files: dict[str, str] | None = None) -> Path:
    """``git init -b branch`` at ``path`` and commit ``files`` (default a README); the path."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    for rel, content in (files if files is not None else {"README.md": "hello\n"}).items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", "initial")
    return path


def commit_file(repo: Path, rel: str, content: str, message: str | None = None) -> str:
    """Write ``content`` to ``rel``, commit it on the current branch; the new sha."""
    target = repo / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    git(repo, "add", "--", rel)
    git(repo, "commit", "-q", "-m", message or f"change {rel}")
    return git(repo, "rev-parse", "HEAD")


def git_counter(tmp_path: Path) -> tuple[Path, Path]:
    """A directory holding a ``git`` that logs its arguments to the returned log file (put
    it first on the PATH of what is counted), and that log file."""
    real = shutil.which("git")
    assert real is not None
    bin_dir, log = tmp_path / "gitbin", tmp_path / "git.log"
    bin_dir.mkdir()
    log.touch()
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return bin_dir, log
