"""Run one function in several threads released at once, for tests of real concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable


def together(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``n`` threads released at once; re-raise the first error."""
    barrier = threading.Barrier(n, timeout=30)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    if errors:
        raise errors[0]
