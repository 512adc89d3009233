"""The repository every test of the git package starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitutil import init_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", files={"README.md": "hello\n", "a.txt": "a\n"})
