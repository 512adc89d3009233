"""The one runner of the service manager's commands (systemctl, journalctl, launchctl, tail)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    code: int  # the exit code; 127: the program is not installed
    output: str  # stdout and stderr together, when captured ("" when shown)


def run(argv: Sequence[str], *, capture: bool = True, timeout: float | None = 60) -> Outcome:
    """Run ``argv`` to its end. ``capture`` False shows its output on this terminal (for
    ``status`` and ``logs``; no timeout then: ``logs -f`` runs until interrupted)."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            text=True,
            timeout=timeout if capture else None,
            check=False,
        )
    except FileNotFoundError:
        return Outcome(127, f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return Outcome(124, f"{' '.join(argv)}: no answer in {timeout:g}s")
    return Outcome(done.returncode, (done.stdout or "").strip())
