"""The name of a job log's head: where the log writer keeps the start of ``agent.log``.

The log writer (:mod:`dispatcher.process.logpipe`) caps an agent's log as it writes it:
before a write would take ``agent.log`` past its limit it renames it to
``agent.log.1`` (older copies move up to ``agent.log.KEEP``) and starts a new
``agent.log``; before the first rotation it keeps the log's start in
``agent.log.head``. The writer uses the standard library only and imports
nothing of ``dispatcher``, so it keeps its own copy of the head's name;
``tests/test_logcap.py`` checks that the two agree. The daemon reads no rotated
copy; what does read the head (spawn, the session-id reader) takes its name from here.

Standard library only.
"""

from __future__ import annotations

from pathlib import Path


def head_path(path: Path) -> Path:
    """Where the log writer keeps the start of the log at ``path`` before rotating it."""
    return path.with_name(f"{path.name}.head")
