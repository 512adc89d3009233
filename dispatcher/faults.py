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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_dir: Path | None = None
_scope: ContextVar[str | None] = ContextVar("dispatcher_fault_scope", default=None)


def configure(fault_dir: Path | None) -> None:
    """Enable fault points under ``fault_dir`` (None: disable them)."""
    global _dir
    _dir = fault_dir


@contextmanager
def scope(label: str) -> Iterator[None]:
    """While inside it, a point ``name`` is also the point ``name.label``: a test holds
    one caller's pass through a shared point (``store.in-write.job-end``: the write of
    a job's end, not the claim's or a heartbeat's)."""
    token = _scope.set(label)
    try:
        yield
    finally:
        _scope.reset(token)


def reach(name: str, *, poll: float = 0.01) -> None:
    """Hold here while ``<fault dir>/<name>.hold`` exists (see the module docstring),
    or ``<name>.<scope>.hold`` inside :func:`scope`."""
    if _dir is None:
        return
    if not _NAME.match(name):
        raise ValueError(f"bad fault point name: {name!r}")
    label = _scope.get()
    for point in (name, f"{name}.{label}") if label else (name,):
        hold = _dir / f"{point}.hold"
        if not hold.exists():
            continue
        (_dir / f"{point}.reached").touch()
        while hold.exists():
            time.sleep(poll)
