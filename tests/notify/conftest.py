"""Fixtures of the notify tests: a local receiver, and notifiers stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.notify.delivery import Notifier
from dispatcher.notify.targets import Target
from tests.notify.helpers import Receiver, Recorder


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make_notifier() -> Iterator[Any]:
    """Started notifiers over fixed targets, fast backoff; each records to its :class:`Recorder`."""
    made: list[Notifier] = []

    def make(targets: list[Target], **kwargs: Any) -> tuple[Notifier, Recorder]:
        recorder = kwargs.pop("record", None) or Recorder()
        kwargs.setdefault("settled", recorder.settle)
        kwargs.setdefault("backoff", 0.01)
        kwargs.setdefault("timeout", 10.0)
        kwargs.setdefault("environ", {})
        notifier = Notifier(lambda _n: targets, recorder, **kwargs)
        notifier.start()
        made.append(notifier)
        return notifier, recorder

    yield make
    for notifier in made:
        notifier.stop(timeout=2.0)
