"""Deterministic synthetic repos, generated once per run and cached in its temp dir.

Files are written from Python (100 per directory), staged with one
``git add -A`` and committed; then ``commits`` small commits each change a
few files spread over the tree, so there is history to recycle across. Author
and committer dates are fixed, so the same arguments always give the same
commit ids.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import Ctx, sh

EPOCH = 1_700_000_000  # the commits' dates, one minute apart


def _env(env: Mapping[str, str] | None, n: int) -> dict[str, str]:
    out = dict(env if env is not None else os.environ)
    stamp = f"@{EPOCH + 60 * n} +0000"
    out.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    return out


def file_path(root: Path, i: int) -> Path:
    return root / f"d{i // 100:04d}" / f"f{i:06d}.txt"


def make_repo(
    path: Path, files: int, commits: int = 20, env: Mapping[str, str] | None = None
) -> Path:
    """``files`` files in 100-file directories, then ``commits`` small commits of history."""
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q", "-b", "main", env=env)
    for i in range(files):
        if i % 100 == 0:
            file_path(path, i).parent.mkdir()
        file_path(path, i).write_text(f"file {i}\n" + "x" * (i % 200) + "\n")
    sh(path, "git", "add", "-A", env=env)
    sh(path, "git", "commit", "-qm", "initial", env=_env(env, 0))
    for c in range(commits):
        for k in range(5):  # five files, scattered (deterministic)
            j = (c * 7919 + k * 104_729) % files
            file_path(path, j).write_text(f"rev {c} of file {j}\n")
        sh(path, "git", "commit", "-qam", f"rev {c}", env=_env(env, c + 1))
    return path


def make_small_repo(path: Path, env: Mapping[str, str] | None = None, **files: str) -> Path:
    """A three-file repo, plus the ``files`` given (names with ``__`` for ``/``)."""
    content = {"README.md": "hello\n", "src__app.py": "print('hi')\n", "LICENSE": "MIT\n", **files}
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q", "-b", "main", env=env)
    for name, text in content.items():
        target = path / name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sh(path, "git", "add", "-A", env=env)
    sh(path, "git", "commit", "-qm", "initial", env=_env(env, 0))
    return path


def repo(ctx: Ctx, files: int) -> Path:
    """The run's ``files``-file repo, generated on first use."""
    made: dict[int, dict[str, Any]] = ctx.cache.setdefault("repos", {})
    if files not in made:
        path = ctx.root / "repos" / f"r{files}"
        t0 = time.perf_counter()
        make_repo(path, files, env=ctx.env)
        made[files] = {
            "path": path,
            "files": files,
            "commits": int(ctx.git(path, "rev-list", "--count", "HEAD")),
            "generate_s": round(time.perf_counter() - t0, 2),
            "head": ctx.git(path, "rev-parse", "HEAD"),
        }
    return Path(made[files]["path"])


def sizes(ctx: Ctx) -> list[int]:
    chosen = ctx.options.get("files")
    if chosen:
        return list(chosen)
    return [1_000, 10_000] if ctx.quick else [1_000, 10_000, 50_000]


def run(ctx: Ctx) -> dict[str, Any]:
    rows = []
    for files in sizes(ctx):
        repo(ctx, files)
        info = ctx.cache["repos"][files]
        rows.append({k: v for k, v in info.items() if k != "path"})
    return {"repos": rows}


def table(result: dict[str, Any]) -> list[str]:
    lines = [f"{'files':>7} | {'commits':>7} | {'generated in':>12} | head"]
    for r in result["repos"]:
        lines.append(
            f"{r['files']:>7,} | {r['commits']:>7} | {r['generate_s']:>10} s | {r['head'][:12]}"
        )
    return lines
