"""One attempt and what its answer means: retried (5xx, 408, 429, timeouts, connection
errors) or final (other statuses, redirects elsewhere), seen through a notifier."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.notify.helpers import SECRET, Receiver, Reply, notice, target, verify


@pytest.mark.parametrize(
    ("kind", "replies", "options", "outcome"),
    [
        *(
            pytest.param("ntfy", [Reply(s)] * 2, {}, (True, 3, 200, None), id=f"{s}-retried")
            for s in (500, 502, 503, 408, 429)
        ),
        pytest.param(
            "ntfy",
            [Reply(500, body=b"database\ndown")] * 10,
            {"attempts": 3},
            (False, 3, 500, "HTTP 500: database down"),
            id="final-failure-after-n-attempts",
        ),
        *(
            pytest.param(
                "slack",
                [Reply(s, body=b"invalid_payload")],
                {},
                (False, 1, s, f"HTTP {s}: invalid_payload"),
                id=f"{s}-not-retried",
            )
            for s in (400, 401, 403, 404, 410, 422)
        ),
        pytest.param(
            "ntfy",
            [Reply(delay=1.0)] * 2,
            {"attempts": 2, "timeout": 0.2},
            (False, 2, None, "timed out after 0.2s"),
            id="timeouts-retried",
        ),
    ],
)
def test_what_an_answer_means(
    kind: str,
    replies: list[Reply],
    options: dict[str, Any],
    outcome: tuple[bool, int, int | None, str | None],
    receiver: Receiver,
    make_notifier: Any,
) -> None:
    """``outcome`` is the delivery's (ok, attempts, status_code, error); one request per attempt."""
    path = "/services/T/B/t"
    receiver.plan(path, *replies)
    notifier, recorder = make_notifier([target(kind, receiver.url(path))], **options)
    notifier.notify(notice())
    assert recorder.wait_settled()
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code, delivery.error) == outcome
    assert len(receiver.at(path)) == outcome[1]


def test_connection_errors_are_retried(make_notifier: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier, recorder = make_notifier([target("ntfy", f"http://127.0.0.1:{port}/t")], attempts=2)
    notifier.notify(notice())
    assert recorder.wait_settled()
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (False, 2, None)
    assert delivery.error is not None
    assert delivery.error.startswith("connection failed")


def test_same_host_307_is_followed_and_other_hosts_are_not(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/old", Reply(307, {"Location": "/new"}))
    receiver.plan("/away", Reply(308, {"Location": receiver.url("/elsewhere", host="localhost")}))
    receiver.plan("/moved", Reply(301, {"Location": "/new"}))
    notifier, recorder = make_notifier(
        [
            target("webhook", receiver.url("/old"), secret=SECRET),
            target("ntfy", receiver.url("/away")),
            target("ntfy", receiver.url("/moved")),
        ]
    )
    notifier.notify(notice())
    assert recorder.wait_settled()
    old, new = receiver.at("/old"), receiver.at("/new")
    assert len(old) == 1
    assert len(new) == 1
    assert new[0].body == old[0].body
    assert verify(SECRET, new[0].headers, new[0].body)
    assert receiver.at("/elsewhere") == []
    by_path = {d.url.split("/")[-1]: d for d in recorder.deliveries}
    assert by_path["old"].ok
    assert (by_path["away"].ok, by_path["away"].attempts, by_path["away"].status_code) == (
        False,
        1,
        308,
    )
    assert "another host" in (by_path["away"].error or "")
    assert (by_path["moved"].ok, by_path["moved"].status_code) == (False, 301)
