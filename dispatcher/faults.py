"""Named fault points that crash tests can hold open.

A test starts the daemon with ``DISPATCHER_FAULT_DIR=<dir>`` and creates
``<dir>/<name>.hold``. When the daemon reaches :func:`reach` with that name it
creates ``<dir>/<name>.reached`` and waits (polling) until the hold file is
removed; the test, having seen ``.reached``, can ``kill -9`` the daemon in
exactly that window, or remove the hold to let it go on. With no fault dir
configured (every real deployment) :func:`reach` returns at once and touches
nothing.

Configured once, by the composition root (:func:`configure`), from Settings;
nothing happens at import time. Standard library only, so the lowest layers
(``git``, ``proc``) may mark their windows too.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_dir: Path | None = None


def configure(fault_dir: Path | None) -> None:
    """Enable fault points under ``fault_dir`` (None: disable them)."""
    global _dir
    _dir = fault_dir


def reach(name: str, *, poll: float = 0.01) -> None:
    """Hold here while ``<fault dir>/<name>.hold`` exists (see the module docstring)."""
    if _dir is None:
        return
    if not _NAME.match(name):
        raise ValueError(f"bad fault point name: {name!r}")
    hold = _dir / f"{name}.hold"
    if not hold.exists():
        return
    (_dir / f"{name}.reached").touch()
    while hold.exists():
        time.sleep(poll)
