"""``python -m bench.run``: the former entry point, now the same as ``python -m bench``.

Kept so older notes and scripts still work; every section and option is in
:mod:`bench.cli` (``--files``, ``--spawns``, ``--jobs`` still work as before).
"""

from __future__ import annotations

from bench.cli import main
from bench.repos import make_repo
from bench.spawn import AGENT

__all__ = ["AGENT", "main", "make_repo"]

if __name__ == "__main__":
    raise SystemExit(main())
