"""Which git the daemon runs, and whether it is new enough.

The daemon computes merges without a worktree with ``git merge-tree --write-tree``,
which git has since 2.38 (:mod:`dispatcher.git.merge`). ``dispatcher serve`` refuses
to start with an older git (:func:`require`), and ``dispatcher doctor`` reports it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import Final

from dispatcher.errors import DispatcherError, GitError
from dispatcher.git import cmd

MINIMUM: Final = (2, 38)
"""The oldest git the daemon works with: ``git merge-tree --write-tree`` came in 2.38."""

_VERSION = re.compile(r"git version (\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class GitVersion:
    """What ``git version`` said (``2.39.5``), as numbers, and where that git is."""

    text: str
    numbers: tuple[int, int, int]
    path: str | None

    @property
    def new_enough(self) -> bool:
        return self.numbers[:2] >= MINIMUM

    def too_old(self) -> str:
        """The one line saying this git is too old (whatever :attr:`new_enough` says)."""
        where = f" ({self.path})" if self.path else ""
        return (
            f"git {self.text}{where} is older than {'.'.join(map(str, MINIMUM))}, which the "
            "dispatcher needs for git merge-tree --write-tree"
        )


def installed() -> GitVersion:
    """The git on the daemon's PATH; raises :class:`GitError` when there is none or it
    prints no version."""
    result = cmd.run(["version"], os.path.abspath(os.sep))
    match = _VERSION.search(result.stdout)
    if match is None:
        raise GitError(f"cannot read a version in git's answer {result.stdout.strip()!r}")
    major, minor, patch = (int(n) for n in match.groups(default="0"))
    text = result.stdout.strip().removeprefix("git version ")
    return GitVersion(text=text, numbers=(major, minor, patch), path=shutil.which("git"))


def require() -> GitVersion:
    """:func:`installed`, or :class:`DispatcherError` in one line saying what to install."""
    try:
        found = installed()
    except GitError as exc:
        raise DispatcherError(f"cannot run git: {exc.message}; install git 2.38 or later") from None
    if not found.new_enough:
        raise DispatcherError(f"{found.too_old()}; install git 2.38 or later")
    return found
