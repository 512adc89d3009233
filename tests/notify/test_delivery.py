"""Background delivery: retries and backoff, settling, skipping, and a worker nothing can stop."""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from typing import Any

import httpx
import pytest

from dispatcher.notify.delivery import Delivery, Notifier, message_id_for
from dispatcher.notify.notices import JobNotice
from dispatcher.notify.targets import Target, redact_url
from tests.notify.helpers import (
    OTHER_SECRET,
    SECRET,
    WAIT,
    FakeClock,
    Receiver,
    Recorder,
    Reply,
    decode_header,
    notice,
    target,
    verify,
)
from tests.waiting import wait_until


def test_ntfy_end_to_end_non_ascii_title(receiver: Receiver, make_notifier: Any) -> None:
    notifier, recorder = make_notifier([target("ntfy", receiver.url("/topic"))])
    notifier.notify(notice(prompt="Réparer le bug 🐛 dans le formulaire\r\nX-Injected: 1"))
    assert recorder.wait_settled()
    [got] = receiver.at("/topic")
    assert "x-injected" not in got.headers
    assert got.headers["title"].isascii()
    assert decode_header(got.headers["title"]) == "Réparer le bug 🐛 dans le formulaire"
    assert got.headers["priority"] == "default"
    assert got.headers["click"] == "http://127.0.0.1:8765/jobs/12"
    assert got.headers["user-agent"].startswith("worktree-dispatcher/")
    assert got.body.decode().endswith("Fixed the form handler.")
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (True, 1, 200)


def test_webhook_retries_keep_the_id_and_every_attempt_verifies(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/hook", Reply(500), Reply(503))
    notifier, recorder = make_notifier(
        [target("webhook", receiver.url("/hook"), secret="env:HOOK_SECRET")],
        environ={"HOOK_SECRET": SECRET},
    )
    notifier.notify(notice(state="failed", error="exit 1"))
    assert recorder.wait_settled()
    got = receiver.at("/hook")
    assert len(got) == 3
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[0].headers["webhook-id"].startswith("msg_")
    for r in got:
        assert verify(SECRET, r.headers, r.body)
        assert not verify(OTHER_SECRET, r.headers, r.body)
        assert not verify(SECRET, r.headers, r.body.replace(b'"job_id":12', b'"job_id":13'))
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
    assert len({json.loads(r.body)["timestamp"] for r in got}) == 1
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (True, 3, 200)
    assert delivery.message_id == got[0].headers["webhook-id"]
    assert (delivery.job_id, delivery.state, delivery.target) == (12, "failed", "webhook")


@pytest.mark.parametrize(
    ("environ", "said", "unsaid"),
    [
        pytest.param({}, ["HOOK_SECRET", "not set"], [], id="missing"),
        pytest.param(
            {"HOOK_SECRET": "whsec_not*base64*at*all"},
            ["base64", "env:HOOK_SECRET"],
            ["not*base64", "\n"],
            id="malformed",
        ),
    ],
)
def test_an_env_secret_that_cannot_be_used_is_a_recorded_failure_not_an_exception(
    environ: dict[str, str],
    said: list[str],
    unsaid: list[str],
    receiver: Receiver,
    make_notifier: Any,
) -> None:
    """Nothing is sent, and the error names the problem without echoing the secret."""
    notifier, recorder = make_notifier(
        [target("webhook", receiver.url("/hook"), secret="env:HOOK_SECRET")], environ=environ
    )
    notifier.notify(notice())  # must not raise
    assert recorder.wait_settled()
    delivery = recorder.only()
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.status_code is None
    assert delivery.error is not None
    for text in said:
        assert text in delivery.error
    for text in unsaid:
        assert text not in delivery.error
    assert receiver.at("/hook") == []


def test_only_matching_targets_are_sent_to(receiver: Receiver, make_notifier: Any) -> None:
    targets = [
        target("ntfy", receiver.url("/failed-only"), {"failed"}),
        target("ntfy", receiver.url("/review"), {"needs-review"}),
        target("webhook", receiver.url("/both"), {"succeeded", "needs-review"}),
    ]
    notifier, recorder = make_notifier(targets)
    notifier.notify(notice(state="succeeded", files_changed=4))
    notifier.notify(notice(job_id=13, state="succeeded", files_changed=0))
    assert recorder.wait_settled(2)
    assert receiver.at("/failed-only") == []
    assert len(receiver.at("/review")) == 1
    assert len(receiver.at("/both")) == 2  # once per notice, even when two entries match
    assert sorted((d.job_id, d.url.split("/")[-1]) for d in recorder.deliveries) == [
        (12, "both"),
        (12, "review"),
        (13, "both"),
    ]


# ------------------------------------------------------------------ retries


def clocked(make_notifier: Any, url: str, **options: Any) -> tuple[Notifier, Recorder, FakeClock]:
    """One worker on a :class:`FakeClock`, backoff 1 s, sending to one ntfy ``url``."""
    clock = FakeClock()
    notifier, recorder = make_notifier(
        [target("ntfy", url)], backoff=1.0, workers=1, clock=clock.time, sleep=clock.sleep,
        **options,
    )  # fmt: skip
    return notifier, recorder, clock


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("1000", 60.0)],
)
def test_retry_after_is_honoured_up_to_max_backoff(
    retry_after: str, expected: float, receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/t", Reply(429, {"Retry-After": retry_after}))
    notifier, recorder, clock = clocked(make_notifier, receiver.url("/t"), max_backoff=60.0)
    notifier.notify(notice())
    assert recorder.wait_settled()
    assert clock.sleeps == [expected]
    assert recorder.only().attempts == 2


def test_backoff_is_exponential_with_jitter_and_capped(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan(
        "/t",
        *[Reply(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})] * 5,  # a date: ignored
    )
    notifier, recorder, clock = clocked(
        make_notifier, receiver.url("/t"), attempts=5, max_backoff=3.0, rng=random.Random(7)
    )
    notifier.notify(notice())
    assert recorder.wait_settled()
    sleeps = clock.sleeps
    assert len(sleeps) == 4
    for delay, base in zip(sleeps, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert base / 2 <= delay <= base, sleeps
    assert len(set(sleeps)) == 4  # jittered
    assert recorder.only().attempts == 5


# ------------------------------------------------------------------ the notifier itself


def test_notify_returns_at_once_even_when_the_receiver_is_slow(
    receiver: Receiver, make_notifier: Any
) -> None:
    # The receiver answers nothing until released, and is released only after all
    # eight notify() calls returned: a call that waited for a delivery would never
    # return. (No wall-clock bound: a loaded machine may pause this thread anyway.)
    release = threading.Event()
    receiver.plan("/slow", *[Reply(hold=release)] * 8)
    notifier, recorder = make_notifier([target("ntfy", receiver.url("/slow"))])
    notified = threading.Event()

    def notify_all() -> None:
        for job_id in range(8):
            notifier.notify(notice(job_id=job_id))
        notified.set()

    try:
        threading.Thread(target=notify_all, daemon=True).start()
        receiver.wait_for(1)  # a delivery is in flight, held by the receiver
        assert notified.wait(WAIT), "notify() waited for the receiver"
        assert recorder.deliveries == []  # nothing was answered yet
    finally:
        release.set()
    assert recorder.wait_settled(8)
    assert len(recorder.deliveries) == 8
    assert all(d.ok for d in recorder.deliveries)


def one_down(receiver: Receiver, make_notifier: Any) -> tuple[Notifier, Recorder]:
    """A notifier sending to /down (500 five times, retried after 15-30 s) and /up."""
    receiver.plan("/down", *[Reply(500)] * 5)
    return make_notifier(
        [target("ntfy", receiver.url("/down")), target("ntfy", receiver.url("/up"))],
        backoff=30.0,
    )


def test_a_failing_endpoint_does_not_hold_up_others_and_stop_drops_pending_work(
    receiver: Receiver, make_notifier: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatcher.notify")
    notifier, recorder = one_down(receiver, make_notifier)
    notifier.notify(notice())
    wait_until(
        lambda: "retry 2/5" in caplog.text and recorder.deliveries,
        lambda: f"the second retry and a delivery; the log: {caplog.text}",
        WAIT,
        interval=0.01,
    )
    assert [d.url.split("/")[-1] for d in recorder.deliveries] == ["up"]
    assert len(receiver.at("/down")) == 1
    assert recorder.settled == []  # the retry of /down is still pending
    started = time.monotonic()
    assert notifier.stop(timeout=15)
    # Well under the 30 s backoff of the pending retry: stop does not wait it out.
    assert time.monotonic() - started < 20
    assert "1 pending notification(s) dropped" in caplog.text
    assert [d.url.split("/")[-1] for d in recorder.deliveries] == ["up"]
    assert len(receiver.at("/down")) == 1
    notifier.notify(notice(job_id=99))  # after stop: dropped with a warning, no exception
    assert "notice for job 99 dropped" in caplog.text
    assert len(recorder.deliveries) == 1


def test_a_notice_settles_once_every_delivery_has_a_final_outcome(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/flaky", Reply(503), Reply(503))
    receiver.plan("/bad", Reply(404))
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/flaky")), target("webhook", receiver.url("/bad")),
         target("ntfy", receiver.url("/off"), {"failed"})],
    )  # fmt: skip
    notifier.notify(notice())
    assert recorder.wait_settled()
    assert recorder.settled == [notice()]
    # Both deliveries were final by then (the 404 given up on, the 503s retried to a 200);
    # the target that does not want "succeeded" was never a delivery.
    assert sorted((d.url.split("/")[-1], d.ok) for d in recorder.deliveries) == [
        ("bad", False), ("flaky", True)
    ]  # fmt: skip
    assert len(receiver.at("/flaky")) == 3
    assert notifier.stop(timeout=WAIT)  # whatever was left has run
    assert len(recorder.settled) == 1


def test_a_notice_for_no_target_settles_at_once(make_notifier: Any) -> None:
    notifier, recorder = make_notifier([])
    notifier.notify(notice(state="failed"))
    assert recorder.wait_settled()
    assert recorder.settled == [notice(state="failed")] and recorder.deliveries == []


def test_a_notice_still_retrying_at_stop_never_settles(
    receiver: Receiver, make_notifier: Any
) -> None:
    notifier, recorder = one_down(receiver, make_notifier)
    notifier.notify(notice())
    receiver.wait_for(2)
    # /up done; /down waits 15-30 s for its retry
    wait_until(lambda: recorder.deliveries, "the delivery to /up", WAIT, interval=0.01)
    assert notifier.stop(timeout=15)
    assert recorder.settled == []  # still owed: the caller keeps its mark


def test_skipped_targets_are_not_sent_and_ids_are_stable_across_notifiers(
    receiver: Receiver, make_notifier: Any
) -> None:
    targets = [target("webhook", receiver.url("/a")), target("webhook", receiver.url("/b?k=s"))]
    first, _ = make_notifier(targets)
    first.notify(notice())
    receiver.wait_for(2)
    ids = {r.path: r.headers["webhook-id"] for r in receiver.requests}
    again, recorder = make_notifier(targets)  # as a restarted daemon
    again.notify(notice(), skip=[message_id_for(notice(), targets[0])])
    assert recorder.wait_settled()
    assert len(receiver.requests) == 3 and receiver.requests[2].path == "/b?k=s"
    assert receiver.requests[-1].headers["webhook-id"] == ids["/b?k=s"]  # receivers dedupe
    assert [d.url for d in recorder.deliveries] == [redact_url(receiver.url("/b?k=s"))]
    other = notice(job_id=13)
    again.notify(other)
    receiver.wait_for(5)
    assert {r.headers["webhook-id"] for r in receiver.requests[-2:]}.isdisjoint(ids.values())


def test_record_and_targets_for_errors_never_escape(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def record(delivery: Delivery) -> None:
        calls.append(delivery.job_id)
        raise RuntimeError("database is locked")

    def targets_for(n: JobNotice) -> list[Target]:
        if n.job_id == 1:
            raise RuntimeError("config unreadable")
        return [target("ntfy", receiver.url("/t"))]

    settled = Recorder()
    notifier = Notifier(targets_for, record, settled=settled.settle, environ={}, backoff=0.01)
    notifier.start()
    try:
        with caplog.at_level(logging.ERROR, logger="dispatcher.notify"):
            notifier.notify(notice(job_id=1))
            notifier.notify(notice(job_id=2))
            notifier.notify(notice(job_id=3))
            assert settled.wait_settled(2)  # job 1, whose targets cannot be listed, never settles
    finally:
        assert notifier.stop(timeout=WAIT)  # job 1, taken first, has run
    assert sorted(calls) == [2, 3]
    assert len(receiver.at("/t")) == 2
    assert "config unreadable" in caplog.text
    assert "database is locked" in caplog.text


def test_delivery_url_is_redacted(receiver: Receiver, make_notifier: Any) -> None:
    url = f"http://user:pw@127.0.0.1:{receiver.port}/topic?auth=tok123&x=1"
    notifier, recorder = make_notifier([target("ntfy", url)])
    notifier.notify(notice())
    assert recorder.wait_settled()
    [got] = receiver.at("/topic")
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert recorder.only().url == f"http://127.0.0.1:{receiver.port}/topic?auth=***&x=***"


def test_custom_client_is_used_and_not_closed(receiver: Receiver) -> None:
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append(request.headers["user-agent"])

    with httpx.Client(event_hooks={"request": [hook]}) as client:
        recorder = Recorder()
        notifier = Notifier(
            lambda _n: [target("ntfy", receiver.url("/t"))], recorder,
            settled=recorder.settle, client=client, environ={},
        )  # fmt: skip
        notifier.start()
        notifier.notify(notice())
        assert recorder.wait_settled()
        assert notifier.stop(timeout=WAIT)
        assert not client.is_closed
    assert len(seen) == 1
    assert seen[0].startswith("worktree-dispatcher/")
