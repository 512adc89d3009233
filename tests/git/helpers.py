"""What the tests of the git package share (git is never mocked)."""

from __future__ import annotations

from pathlib import Path

from tests.gitutil import git as g

AGENT = {"author_name": "Dispatcher Bot", "author_email": "bot@dispatcher.invalid"}


def head(repo: Path, rev: str = "HEAD") -> str:
    return g(repo, "rev-parse", rev)


def has_branch(repo: Path, name: str) -> bool:
    return bool(g(repo, "for-each-ref", f"refs/heads/{name}"))
