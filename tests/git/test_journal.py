"""dispatcher.git.journal: the record of a merge under way."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.git import journal as merge_journal


def test_merge_journal_refuses_what_it_cannot_read(tmp_path: Path) -> None:

    path = tmp_path / "1.json"
    for text in ("{nope", "[]", '{"version": 1, "label": "1"}', '{"version": 9}'):
        path.write_text(text)
        with pytest.raises(ValueError, match="merge journal"):
            merge_journal.read(path)
    aside = merge_journal.move_aside(path)
    assert not path.exists() and aside.name.startswith("1.json.bad-")
    assert merge_journal.pending(tmp_path) == []
