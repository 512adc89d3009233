"""Wait in a test until a condition holds: one polling loop, failing with what it awaited.

Standard library only: ``bench/`` imports it too, and must not need pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    message: str | Callable[[], str],
    timeout: float = 20,
    interval: float = 0.02,
    *,
    max_interval: float | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Between calls it sleeps ``interval`` seconds; with ``max_interval`` the pause grows by
    half each time up to that (for a predicate that asks the daemon's API). After
    ``timeout`` seconds it raises AssertionError naming what was awaited (``message``, or
    what ``message()`` returns then: a message can show state read at the deadline) and the
    last value seen (unless that was just False or None). An exception from ``predicate``
    goes through as it is.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            last = "" if value is None or value is False else f" (last value: {value!r})"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{last}")
        time.sleep(interval)
        if max_interval is not None:
            interval = min(interval * 1.5, max_interval)
