"""The names of a job log's files: the live ``agent.log``, its rotated copies and its head.

The log writer (:mod:`dispatcher.process.logpipe`) caps an agent's log as it writes it:
before a write would take ``agent.log`` past its limit it renames it to
``agent.log.1`` (older copies move up to ``agent.log.KEEP``) and starts a new
``agent.log``; before the first rotation it keeps the log's start in
``agent.log.head``. The writer uses the standard library only and imports
nothing of ``dispatcher``, so it keeps its own copy of these names;
``tests/test_logcap.py`` checks that the two agree. Everything else (spawn,
the session-id reader) takes them from here.

Standard library only.
"""

from __future__ import annotations

from pathlib import Path


def rotated_path(path: Path, n: int) -> Path:
    """The ``n``-th rotated copy of ``path``: ``agent.log.1`` is the newest."""
    return path.with_name(f"{path.name}.{n}")


def head_path(path: Path) -> Path:
    """Where the log writer keeps the start of the log at ``path`` before rotating it."""
    return path.with_name(f"{path.name}.head")
