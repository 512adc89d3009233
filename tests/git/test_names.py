"""dispatcher.git.names: which branch names reach git."""

from __future__ import annotations

import pytest

from dispatcher.errors import (
    InvalidInput,
)
from dispatcher.git import names


@pytest.mark.parametrize("name", ["dispatcher/1-fix", "main", "feature/x.y_z", "a-b"])
def test_validate_branch_name_accepts(name: str) -> None:
    assert names.validate_branch_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "--upload-pack=x",
        "-x",
        "a..b",
        "a b",
        "x@{1}",
        "@{-1}",
        "",
        "a\x00b",
        "a\nb",
        "refs/../x",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "x.lock",
        "x/",
        "/x",
        "a//b",
        ".hidden",
        "HEAD",
        "@",
    ],
)
def test_validate_branch_name_refuses(name: str) -> None:
    with pytest.raises(InvalidInput):
        names.validate_branch_name(name)
