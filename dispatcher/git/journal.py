"""The journal of a merge under way: what a restart needs to finish or undo it.

:func:`dispatcher.git.merge.merge` writes one small JSON file (fsynced) before it
moves a target branch, and the caller removes it once the job records the
merge. A daemon that starts and finds one knows a merge was cut short: which
checkout it was updating, from which commit to which, and the nonce that
proves which ``index.lock`` was its own. Standard library only; nothing here
runs git or knows about jobs (the ``label`` is the caller's, opaque here).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

_VERSION = 1


@dataclass(frozen=True)
class Landing:
    """One merge under way: ``target`` moves from ``old`` to ``new``."""

    label: str  # the caller's name for it (the job id)
    repo: str
    target: str
    old: str
    new: str
    strategy: str
    source: str  # the commit that was merged (the job's head)
    nonce: str
    worktree: str | None = None  # the checkout of ``target`` being updated, if any
    index: str | None = None  # that checkout's index file
    onto: str | None = None  # a rebase's: the commit the branch was brought onto
    # A merge by push (docs/cluster.md): the hub remote the target was pushed to, and
    # the target's tip there that the push's lease expected. The hub, not the local
    # ref, says whether such a merge landed.
    hub: str | None = None
    hub_old: str | None = None


def write(path: Path, landing: Landing) -> None:
    """Store ``landing`` at ``path`` durably: written aside, fsynced, renamed, dir fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"version": _VERSION, **asdict(landing)}, indent=1).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read(path: Path) -> Landing:
    """The landing stored at ``path``; ValueError if the file is not one (or unreadable)."""
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read merge journal {path}: {exc}") from None
    names = {f.name for f in fields(Landing)}
    if not isinstance(raw, dict) or raw.get("version") != _VERSION:
        raise ValueError(f"merge journal {path} has no known version")
    values = {k: v for k, v in raw.items() if k in names}
    try:
        landing = Landing(**values)
    except TypeError as exc:
        raise ValueError(f"merge journal {path} is incomplete: {exc}") from None
    for name in names:
        value = getattr(landing, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"merge journal {path}: {name} is not a string")
    return landing


def discard(path: Path) -> None:
    """Remove the journal at ``path`` (no-op when it is gone)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _fsync_dir(path.parent)


def pending(directory: Path) -> list[Path]:
    """The journals left in ``directory``, oldest name first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def move_aside(path: Path) -> Path:
    """Rename an unusable journal out of the way (kept for a human); the new path."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    return aside


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
