"""dispatcher.paths: the one check of sparse/copy/link/prompt-file paths and of those given to git."""

from __future__ import annotations

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.paths import inside_repo, repo_subpath


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
    [
        *["", "/etc", "../up", "a/../../b", ".", "/", "-rf", "a\\b", "a\x01", ".git"],
        *["x/.git/config", ":(glob)*", ":/top"],
    ],
)
def test_paths_leaving_the_repo_or_into_git_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"inside the repo|git's own data"):
        repo_subpath(bad)


def test_inside_repo_keeps_the_path_as_given_and_refuses_with_invalid_input() -> None:
    assert inside_repo(".dispatcher/skills/") == ".dispatcher/skills/"
    with pytest.raises(InvalidInput, match="inside the repo"):
        inside_repo("../up")
