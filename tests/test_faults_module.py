"""dispatcher.faults: a held point waits until released; an unarmed one does not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import faults
from tests.daemon_fixture import hold_fault, release_fault
from tests.waiting import wait_until


@pytest.fixture
def fault_dir(tmp_path: Path) -> Iterator[Path]:
    faults.configure(tmp_path)
    yield tmp_path
    faults.configure(None)


def test_unarmed_point_returns_at_once_and_leaves_no_file(fault_dir: Path) -> None:
    faults.reach("nothing.armed")
    assert list(fault_dir.iterdir()) == []


def test_disabled_points_ignore_hold_files(tmp_path: Path) -> None:
    faults.configure(None)
    hold_fault(tmp_path, "x")
    faults.reach("x")  # returns: no fault dir configured
    assert not (tmp_path / "x.reached").exists()


def test_held_point_waits_until_the_hold_is_removed(fault_dir: Path) -> None:
    reached = hold_fault(fault_dir, "merge.window")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (faults.reach("merge.window"), done.set()))
    worker.start()
    wait_until(reached.exists, "the point to be reached", timeout=10, interval=0.01)
    assert not done.is_set()
    release_fault(fault_dir, "merge.window")
    worker.join(10)
    assert done.is_set()


def test_bad_names_are_refused(fault_dir: Path) -> None:
    with pytest.raises(ValueError, match="bad fault point name"):
        faults.reach("../escape")
