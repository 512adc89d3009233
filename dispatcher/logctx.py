"""The ids a log line is about (job, repo, event), carried with contextvars.

Where a job runs, an event is handled or a request names a job, the code
binds the ids (:func:`bound`); :class:`IdsFilter`, on the daemon's log
handler, adds them to every record made meanwhile, so no log call has to name
them. An explicit ``extra={"job_id": ...}`` wins over the bound value. A new
thread starts with nothing bound: whoever starts one binds what it is about.

Standard library only (a leaf: every layer may bind ids).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

FIELDS = ("job_id", "repo", "event_id")

_ids: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "dispatcher_log_ids", default=None
)


def current() -> dict[str, object]:
    """The ids bound here now."""
    return dict(_ids.get() or {})


@contextlib.contextmanager
def bound(**ids: object) -> Iterator[None]:
    """Bind ``ids`` (``job_id``, ``repo``, ``event_id``; None values are skipped) on top of
    those already bound, until the block ends."""
    token = _ids.set(_with(ids))
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: object) -> None:
    """Add ``ids`` to what is bound in this context for the rest of it (a thread's own
    context, or a block of :func:`bound`, which undoes it at its end)."""
    _ids.set(_with(ids))


def _with(ids: dict[str, object]) -> dict[str, object]:
    """What is bound now, with ``ids`` on top (None values skipped)."""
    return {**current(), **{k: v for k, v in ids.items() if v is not None}}


class IdsFilter(logging.Filter):
    """Adds the bound ids to each record as attributes (``record.job_id`` ...), unless the
    call gave its own (``extra=``): JSON logs show them as fields. ``suffix``: also
    ``record.ids``, the ids for the end of a text line (`` [job_id=3 repo=app]``, or
    nothing)."""

    def __init__(self, *, suffix: bool = False) -> None:
        super().__init__()
        self.suffix = suffix

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if self.suffix:
            found = [f"{n}={getattr(record, n)}" for n in FIELDS if hasattr(record, n)]
            record.ids = f" [{' '.join(found)}]" if found else ""
        return True
