"""dispatcher.paths.repo_subpath: the one check of sparse/copy/link paths."""

from __future__ import annotations

import pytest

from dispatcher.paths import repo_subpath


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("src", "src"),
        ("src/", "src"),
        ("docs/api", "docs/api"),
        (".env", ".env"),
        ("a/.gitignore", "a/.gitignore"),
    ],
)
def test_paths_inside_the_repo_are_kept(given: str, kept: str) -> None:
    assert repo_subpath(given) == kept


@pytest.mark.parametrize(
    "bad",
    ["", "/etc", "../up", "a/../../b", ".", "/", "-rf", "a\\b", "a\x01", ".git", "x/.git/config"],
)
def test_paths_leaving_the_repo_or_into_git_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"inside the repo|git's own data"):
        repo_subpath(bad)
