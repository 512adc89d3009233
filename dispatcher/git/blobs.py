"""Reading committed files: a trigger file, a prompt file, the repo's conventions.

Paths are checked by :func:`dispatcher.paths.inside_repo` before they reach git.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dispatcher.git import cmd
from dispatcher.git.names import check_rev
from dispatcher.paths import inside_repo


def blob_id(repo: Path, rev: str, path: str) -> str | None:
    """The blob sha of ``path`` at ``rev``, or None if it does not exist there."""
    spec = f"{check_rev(rev)}:{inside_repo(path)}"
    result = cmd.run(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", spec], repo, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def read_file(repo: Path, rev: str, path: str) -> str | None:
    """The text of ``path`` at ``rev`` (as committed), or None if it does not exist there."""
    sha = blob_id(repo, rev, path)
    if sha is None:
        return None
    return cmd.run(["cat-file", "blob", sha], repo).stdout


def read_blobs(repo: Path, rev: str, paths: Sequence[str]) -> dict[str, str]:
    """Text of the files at ``rev`` among ``paths``: a file path names itself, a path
    ending in ``/`` names the files directly in that directory. One ``ls-tree`` (and
    one ``cat-file`` per file found); {} when none exists."""
    spec = ["--end-of-options", check_rev(rev), "--", *(inside_repo(p) for p in paths)]
    listing = cmd.run(["ls-tree", "-z", *spec], repo, check=False)
    if listing.returncode != 0:
        return {}
    texts: dict[str, str] = {}
    for entry in listing.stdout.split("\0"):
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            texts[name] = cmd.run(["cat-file", "blob", parts[2]], repo).stdout
    return texts
