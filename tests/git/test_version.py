"""Which git runs and whether it is new enough: read from a real ``git version`` (a
script first on PATH stands in for the gits this machine does not have)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatcher.errors import DispatcherError, GitError
from dispatcher.git import version

SAID = {
    "release": ("git version 2.39.5", "2.39.5", (2, 39, 5), True),
    "the first new enough": ("git version 2.38.0", "2.38.0", (2, 38, 0), True),
    "no patch number": ("git version 2.40", "2.40", (2, 40, 0), True),
    "Apple's": ("git version 2.39.3 (Apple Git-146)", "2.39.3 (Apple Git-146)", (2, 39, 3), True),
    "Windows'": ("git version 2.45.1.windows.1", "2.45.1.windows.1", (2, 45, 1), True),
    "too old": ("git version 2.37.7", "2.37.7", (2, 37, 7), False),
    "much too old": ("git version 1.9.1", "1.9.1", (1, 9, 1), False),
}


def _fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    git = tmp_path / "bin" / "git"
    git.parent.mkdir()
    git.write_text(f"#!/bin/sh\n{body}\n")
    git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{git.parent}:/usr/bin:/bin")
    return git


@pytest.mark.parametrize(("said", "text", "numbers", "new_enough"), SAID.values(), ids=SAID.keys())
def test_the_version_is_read_from_what_git_says(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    said: str,
    text: str,
    numbers: tuple[int, int, int],
    new_enough: bool,
) -> None:
    git = _fake_git(tmp_path, monkeypatch, f'echo "{said}"')
    found = version.installed()
    assert (found.text, found.numbers, found.path, found.new_enough) == (
        text, numbers, str(git), new_enough,
    )  # fmt: skip


def test_require_refuses_an_old_git_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git = _fake_git(tmp_path, monkeypatch, 'echo "git version 2.30.1"')
    with pytest.raises(DispatcherError) as refused:
        version.require()
    assert refused.value.message == (
        f"git 2.30.1 ({git}) is older than 2.38, which the dispatcher needs for git "
        "merge-tree --write-tree; install git 2.38 or later"
    )


def test_a_git_that_says_no_version_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_git(tmp_path, monkeypatch, 'echo "hello"')
    with pytest.raises(GitError, match="cannot read a version in git's answer 'hello'"):
        version.installed()
    with pytest.raises(DispatcherError, match=r"^cannot run git: .*; install git 2\.38 or later$"):
        version.require()


def test_the_real_git_is_new_enough() -> None:
    found = version.installed()
    assert found.new_enough, found
    assert found.path == shutil.which("git")
