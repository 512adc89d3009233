"""The tests' own daemon harness leaves nothing running behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_fixture import _new_daemon


def test_a_daemon_that_does_not_answer_in_time_is_ended(tmp_path: Path) -> None:
    d = _new_daemon(tmp_path / "d")
    with pytest.raises(AssertionError, match="the daemon to answer"):
        d.start(timeout=0)  # no daemon answers before its first poll
    assert d.proc is not None
    assert d.proc.poll() is not None, "the daemon outlived its failed start"
