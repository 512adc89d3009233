"""Run one function in several threads, or several processes, released at once: for tests
of real concurrency."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tests.waiting import wait_until


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


def together_in_processes(argvs: list[list[str]], root: Path, timeout: float = 60) -> list[str]:
    """Run one process per argv, released at once; each one's stdout, in order.

    The contract with the processes (``root`` is made here; it is also their cwd): process
    ``i`` touches ``root/ready-<i>`` once set up, waits for ``root/go``, then does its
    work and prints its result. Each must exit 0 (else its stderr is the failure); any
    still running when this ends is killed."""
    root.mkdir()
    procs = [
        subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]

    def ready() -> bool:
        assert all(p.poll() is None for p in procs), "a process died before it was ready"
        return all((root / f"ready-{i}").exists() for i in range(len(procs)))

    try:
        wait_until(ready, "the processes to be ready", timeout=30, interval=0.01)
        (root / "go").touch()
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [out for out, _ in outputs]
