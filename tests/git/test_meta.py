"""dispatcher.git.meta: what GitPython reads agrees with git."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.git import meta
from tests.gitutil import git as g


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/app.git",
        "git@github.com:acme/app.git",
        "ssh://git@gitea.example:2222/acme/app",
        "/srv/git/app with space.git",
        "true",
        "1",
    ],
)
def test_remote_url_is_what_git_config_says(repo: Path, url: str) -> None:
    g(repo, "remote", "add", "origin", url)
    assert meta.remote_url(repo) == g(repo, "config", "--get", "remote.origin.url") == url


def test_remote_url_of_another_remote_the_last_one_or_none(repo: Path) -> None:
    assert meta.remote_url(repo) is None
    g(repo, "remote", "add", "upstream", "https://example.com/a.git")
    g(repo, "config", "--add", "remote.upstream.url", "https://example.com/b.git")
    assert meta.remote_url(repo) is None
    assert meta.remote_url(repo, "upstream") == "https://example.com/b.git"
    assert g(repo, "config", "--get", "remote.upstream.url") == "https://example.com/b.git"


def test_remote_url_from_a_linked_worktree_reads_the_shared_config(
    repo: Path, tmp_path: Path
) -> None:
    g(repo, "remote", "add", "origin", "https://github.com/acme/app.git")
    g(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"))
    assert meta.remote_url(tmp_path / "wt") == "https://github.com/acme/app.git"


def test_remote_url_of_an_unreadable_config_is_none(repo: Path) -> None:
    config = repo / ".git" / "config"
    text = config.read_text()
    config.unlink()
    config.mkdir()  # neither git nor GitPython can read it
    (config / "x").write_text(text)
    assert meta.remote_url(repo) is None


def test_a_dollar_in_the_repo_path_is_not_expanded(tmp_path: Path) -> None:
    """GitPython expands ``$VARS`` in a path unless told not to: a repo under
    ``a$HOME`` must be read where it is."""
    repo = tmp_path / "a$HOME" / "app"
    repo.mkdir(parents=True)
    g(repo, "init", "-q")
    g(repo, "remote", "add", "origin", "https://example.com/acme/app.git")
    assert meta.remote_url(repo) == "https://example.com/acme/app.git"
