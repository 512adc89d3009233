"""The ids a log line is about (dispatcher/logctx.py), and the log format settings."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from dispatcher import logctx
from dispatcher.config import Settings
from dispatcher.daemon import configure_logging


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger whose lines go to a string, through a handler with :class:`IdsFilter`."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s%(ids)s"))
    handler.addFilter(logctx.IdsFilter(suffix=True))
    logger = logging.getLogger("tests.logctx")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_bound_ids_are_added_nested_undone_and_an_explicit_extra_wins(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured
    logger.info("nothing bound")
    with logctx.bound(job_id=3, repo="app"):
        logger.info("a job's line")
        with logctx.bound(event_id=9, repo=None):  # None binds nothing
            logger.info("an event of it")
        logger.info("the job's again", extra={"job_id": 4})
    logger.info("unbound again")
    assert out.getvalue().splitlines() == [
        "nothing bound",
        "a job's line [job_id=3 repo=app]",
        "an event of it [job_id=3 repo=app event_id=9]",
        "the job's again [job_id=4 repo=app]",
        "unbound again",
    ]


def test_a_thread_starts_with_nothing_bound_and_binds_its_own(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured

    def job_thread() -> None:
        logger.info("before")
        logctx.bind(job_id=7)
        logger.info("after")

    with logctx.bound(job_id=1):
        thread = threading.Thread(target=job_thread)
        thread.start()
        thread.join(10)
        assert logctx.current() == {"job_id": 1}  # the thread's bind stayed in the thread
    assert out.getvalue().splitlines() == ["before", "after [job_id=7]"]


def test_json_format_puts_the_ids_in_fields() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        configure_logging(Settings(log_format="json"))
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
        with logctx.bound(job_id=5, repo="app"):
            logging.getLogger("tests.logjson").warning("job %s: %s", 5, "done")
        record = json.loads(out.getvalue().strip().splitlines()[-1])
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
        logging.captureWarnings(False)
    assert record["message"] == "job 5: done"
    assert (record["job_id"], record["repo"], record["levelname"]) == (5, "app", "WARNING")
    assert "ids" not in record


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "text"),
        ({"DISPATCHER_LOG_FORMAT": "json"}, "json"),
        ({"DISPATCHER_LOG_JSON": "true"}, "json"),  # the old name
        ({"DISPATCHER_LOG_JSON": "true", "DISPATCHER_LOG_FORMAT": "text"}, "text"),
    ],
)
def test_log_format_setting_and_its_old_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("DISPATCHER_LOG_FORMAT", "DISPATCHER_LOG_JSON"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().log_format == expected
