"""The daemon's lines in a job's log: appended whole, the job dir made on the first one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dispatcher.config import Settings
from dispatcher.jobs.files import job_files, note_job


def test_notes_make_the_job_dir_once_and_append_whole_lines(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    files = job_files(settings, 7)
    assert not files.root.exists()
    note_job(settings, 7, "first")
    files.log.write_bytes(files.log.read_bytes() + b"agent output\n")  # the agent writes too
    note_job(settings, 7, "second: ünïcode")
    assert files.log.read_text(encoding="utf-8") == (
        "[dispatcher] first\nagent output\n[dispatcher] second: ünïcode\n"
    )


def test_a_note_that_cannot_be_written_goes_to_the_daemon_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    files = job_files(settings, 8)
    files.root.parent.mkdir(parents=True)
    files.root.write_text("a file where the job dir should be\n")
    with caplog.at_level(logging.WARNING):
        note_job(settings, 8, "lost line")
    assert "job 8: cannot write its log" in caplog.text and "lost line" in caplog.text
