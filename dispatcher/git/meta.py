"""A repository's metadata read with GitPython, off the hot path: its remotes' URLs.

GitPython answers these from the repository's config file in Python, without a
git process. Importing it runs ``git version`` once (its probe of the
executable, the one git process not started through :mod:`dispatcher.process.proc`),
so it is imported on first use, never when the daemon's modules are imported.
Each ``git.Repo`` is opened in a ``with`` and closed (an open one keeps child
processes alive).
"""

from __future__ import annotations

import configparser
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from git import Repo


@contextlib.contextmanager
def _opened(repo: Path) -> Iterator[Repo]:
    import git  # GitPython (absolute import: not this package)

    with git.Repo(repo, expand_vars=False) as handle:  # a "$" in a path is a "$"
        yield handle


def remote_url(repo: Path, remote: str = "origin") -> str | None:
    """The URL of ``remote`` in the repository's own config (where ``git remote add``
    writes it; the last one if there are several); None when it has none or the
    config file cannot be read."""
    import git

    try:
        with _opened(repo) as handle:
            config = handle.config_reader("repository")
            section = f'remote "{remote}"'
            if not config.has_option(section, "url"):
                return None
            return config.get(section, "url") or None
    except (git.exc.GitError, configparser.Error, OSError):
        return None
