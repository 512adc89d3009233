"""Job notifications: request building, Standard Webhooks signing, background delivery.

Deliveries go over real HTTP to a local receiver (ThreadingHTTPServer on
127.0.0.1, port 0) that records each request and answers from a per-path plan
(500, 429 with Retry-After, a slow answer, a redirect). Signatures are checked
with an independent few-line implementation of the spec, not with the module.
"""

from __future__ import annotations

import base64
import email.header
import hashlib
import hmac
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from dispatcher.errors import InvalidInput
from dispatcher.notify import (
    Delivery,
    JobNotice,
    Notifier,
    Target,
    build_request,
    matches,
    message_id_for,
    parse_secret,
    redact_url,
    sign,
    validate_target,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# Seconds for waits that end as soon as their condition holds: reached only on failure,
# so generous for a loaded CI machine.
WAIT = 30.0


def notice(**changes: Any) -> JobNotice:
    values: dict[str, Any] = {
        "job_id": 12,
        "repo": "myrepo",
        "state": "succeeded",
        "branch": "dispatcher/12-fix-login",
        "prompt": "Fix the login bug\nThe form does not submit.",
        "summary": "Fixed the form handler.",
        "error": None,
        "url": "http://127.0.0.1:8765/jobs/12",
        "cost_usd": 0.4213,
        "files_changed": 3,
        "insertions": 10,
        "deletions": 2,
    }
    values.update(changes)
    return JobNotice(**values)


def target(type_: str, url: str, on: set[str] | None = None, **extra: Any) -> Target:
    return Target(type_, url, frozenset(on or {"succeeded", "failed"}), **extra)  # type: ignore[arg-type]


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """Standard Webhooks verification, written from the spec (independent of the module)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > tolerance:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    return any(
        hmac.compare_digest(sig.removeprefix("v1,"), expected)
        for sig in headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    )


def decode_header(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


# ------------------------------------------------------------------ the receiver


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b"ok"
    hold: threading.Event | None = None  # answer only once this is set


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_headers: list[tuple[str, str]]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plans: dict[str, list[Reply]] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                raw = list(self.headers.items())
                with receiver.cond:
                    receiver.requests.append(
                        Received("POST", self.path, {k.lower(): v for k, v in raw}, raw, body)
                    )
                    plan = receiver.plans.get(self.path)
                    reply = plan.pop(0) if plan else Reply()
                    receiver.cond.notify_all()
                time.sleep(reply.delay)
                if reply.hold is not None:
                    reply.hold.wait(WAIT)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def plan(self, path: str, *replies: Reply) -> None:
        with self.cond:
            self.plans[path] = list(replies)

    def at(self, path: str) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def wait_for(self, count: int, timeout: float = WAIT) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout), self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Recorder:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> None:
        with self.lock:
            self.deliveries.append(delivery)

    def only(self) -> Delivery:
        with self.lock:
            assert len(self.deliveries) == 1, self.deliveries
            return self.deliveries[0]


class FakeClock:
    """A clock that only moves when a worker sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds
        time.sleep(0.001)


@pytest.fixture
def make_notifier() -> Iterator[Any]:
    made: list[Notifier] = []

    def make(targets: list[Target], **kwargs: Any) -> tuple[Notifier, Recorder]:
        recorder = kwargs.pop("record", None) or Recorder()
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


# ------------------------------------------------------------------ ntfy


@pytest.mark.parametrize(
    ("state", "extra", "priority", "tags"),
    [
        ("succeeded", {}, "default", "white_check_mark,eyes"),
        ("failed", {}, "high", "x"),
        ("timed_out", {}, "high", "hourglass"),
        ("canceled", {}, "default", "no_entry_sign"),
        ("merged", {"priority": "low", "tags": ("robot", "ci")}, "low", "tada,robot,ci"),
    ],
)
def test_ntfy_headers(state: str, extra: dict[str, Any], priority: str, tags: str) -> None:
    t = target("ntfy", "https://ntfy.sh/topic", {state}, **extra)
    req = build_request(
        t, notice(state=state, error="boom"), now=NOW, message_id="msg_1", environ={}
    )
    assert req.method == "POST"
    assert req.url == "https://ntfy.sh/topic"
    assert req.headers["Title"] == "Fix the login bug"
    assert req.headers["Priority"] == priority
    assert req.headers["Tags"] == tags
    assert req.headers["Click"] == "http://127.0.0.1:8765/jobs/12"
    assert req.headers["User-Agent"].startswith("worktree-dispatcher/")
    body = req.body.decode()
    assert body.startswith(f"Job 12 {state.replace('_', ' ')}")
    assert ("boom" in body) == (state in ("failed", "timed_out")), body


def test_ntfy_body_is_summary_with_a_state_line_and_stays_under_the_attachment_limit() -> None:
    req = build_request(
        target("ntfy", "https://ntfy.sh/t"),
        notice(summary="é" * 5000),
        now=NOW,
        message_id="msg_1",
        environ={},
    )
    text = req.body.decode("utf-8")  # still valid UTF-8 after the cut
    assert text.startswith(
        "Job 12 succeeded (needs review) in myrepo on dispatcher/12-fix-login: "
        "3 files changed, +10 -2, $0.42\n\néé"
    )
    assert len(req.body) <= 4000
    assert text.endswith("…")


@pytest.mark.parametrize(
    ("prompt", "title"),
    [
        ("Réparer le bug 🐛\nsecond line", "Réparer le bug 🐛"),
        ("line\r\nX-Injected: 1", "line"),
        ("tab\there  and\x00nul\x7fdel", "tab here and nul del"),
        ("vertical\x0btab", "vertical"),
        ("ls\u2028separator", "ls"),
        ("=?utf-8?b?SGk=?= literal", "=?utf-8?b?SGk=?= literal"),
        ("\n\n   \nfirst real line", "first real line"),
        ("", "Job 12"),
        ("ü" * 300, "ü" * 199 + "…"),
    ],
)
def test_ntfy_headers_are_printable_ascii_and_the_title_decodes(prompt: str, title: str) -> None:
    t = target("ntfy", "https://ntfy.sh/t", tags=("tag\u00e9",))
    req = build_request(
        t,
        notice(prompt=prompt, url="http://h/jobs/1\r\nX-Evil: yes", branch="b\nX: y"),
        now=NOW,
        message_id="msg_1",
        environ={},
    )
    for name, value in req.headers.items():
        assert PRINTABLE_ASCII.fullmatch(value), (name, value)
    assert decode_header(req.headers["Title"]) == title
    assert decode_header(req.headers["Tags"]) == "white_check_mark,eyes,tagé"
    assert req.headers["Click"] == "http://h/jobs/1X-Evil:yes"
    for word in req.headers["Title"].split(" "):
        if word.startswith("=?"):
            assert len(word) <= 75, word


def test_ntfy_end_to_end_non_ascii_title(receiver: Receiver, make_notifier: Any) -> None:
    notifier, recorder = make_notifier([target("ntfy", receiver.url("/topic"))])
    notifier.notify(notice(prompt="Réparer le bug 🐛 dans le formulaire\r\nX-Injected: 1"))
    assert notifier.wait_idle(WAIT)
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


# ------------------------------------------------------------------ slack


def test_slack_payload_shape_and_escaping() -> None:
    req = build_request(
        target("slack", "https://hooks.slack.com/services/T0/B0/SECRET"),
        notice(summary="a < b && c > d <!channel> *bold*", prompt="Fix <script> & more"),
        now=NOW,
        message_id="msg_1",
        environ={},
    )
    assert req.headers["Content-Type"].startswith("application/json")
    payload = json.loads(req.body)
    assert set(payload) == {"text", "blocks"}
    assert "&lt;script&gt; &amp; more" in payload["text"]
    header, fields, summary, context = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Fix <script> & more", "emoji": True},
    }
    assert fields["type"] == "section"
    texts = [f["text"] for f in fields["fields"]]
    assert all(f["type"] == "mrkdwn" for f in fields["fields"])
    assert texts == [
        "*Repo*\nmyrepo",
        "*State*\n:white_check_mark: succeeded (needs review)",
        "*Branch*\ndispatcher/12-fix-login",
        "*Changes*\n3 files changed, +10 -2",
        "*Cost*\n$0.42",
    ]
    assert summary["text"]["type"] == "mrkdwn"
    assert summary["text"]["text"] == "a &lt; b &amp;&amp; c &gt; d &lt;!channel&gt; *bold*"
    assert "<!channel>" not in req.body.decode()
    assert context["elements"][0]["text"] == "<http://127.0.0.1:8765/jobs/12|Job 12>"


@pytest.mark.parametrize("char", ["&", "<", "x", "é"])
def test_slack_texts_are_cut_to_the_block_limits_without_breaking_an_entity(char: str) -> None:
    req = build_request(
        target("slack", "https://hooks.slack.com/services/T0/B0/S"),
        notice(
            summary=char * 10_000, prompt="P" * 500, repo=char * 5000, branch=None, cost_usd=None
        ),
        now=NOW,
        message_id="msg_1",
        environ={},
    )
    blocks = json.loads(req.body)["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert blocks[0]["text"]["text"].endswith("…")
    for f in blocks[1]["fields"]:
        assert len(f["text"]) <= 2000
    assert [f["text"].split("\n")[0] for f in blocks[1]["fields"]] == [
        "*Repo*",
        "*State*",
        "*Changes*",
    ]
    text = blocks[2]["text"]["text"]
    assert len(text) <= 3000
    assert text.endswith("…")
    # only whole entities: stripping them leaves no stray '&', '<' or '>'
    assert not re.search(r"[&<>]", re.sub(r"&(amp|lt|gt);", "", text))


# ------------------------------------------------------------------ webhooks


def test_sign_matches_the_standard_webhooks_reference_vector() -> None:
    # From the standard-webhooks reference library's tests (libraries/python/tests).
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (
        sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_webhook_request_is_signed_per_the_spec() -> None:
    t = target("webhook", "https://example.com/hook", secret=SECRET)
    now = datetime.now(UTC)
    req = build_request(
        t, notice(state="failed", error="exit 1"), now=now, message_id="msg_abc", environ={}
    )
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["webhook-id"] == "msg_abc"
    assert req.headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert verify(SECRET, req.headers, req.body)
    assert not verify(SECRET, req.headers, req.body.replace(b"exit 1", b"exit 0"))
    assert not verify(OTHER_SECRET, req.headers, req.body)
    payload = json.loads(req.body)
    assert payload["type"] == "job.failed"
    assert datetime.fromisoformat(payload["timestamp"]) == now
    assert payload["data"] == {
        "job_id": 12,
        "repo": "myrepo",
        "state": "failed",
        "branch": "dispatcher/12-fix-login",
        "prompt": "Fix the login bug\nThe form does not submit.",
        "summary": "Fixed the form handler.",
        "error": "exit 1",
        "url": "http://127.0.0.1:8765/jobs/12",
        "cost_usd": 0.4213,
        "files_changed": 3,
        "insertions": 10,
        "deletions": 2,
        "needs_review": False,
    }


def test_webhook_id_stays_and_timestamp_and_signature_change_per_attempt() -> None:
    t = target("webhook", "https://example.com/hook", secret=SECRET)
    event = NOW - timedelta(minutes=1)
    first, second = (
        build_request(t, notice(), now=at, message_id="msg_x", environ={}, occurred_at=event)
        for at in (NOW, NOW + timedelta(seconds=30))
    )
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "msg_x"
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 30
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert first.body == second.body  # the event timestamp in the payload does not move


def test_webhook_payload_texts_are_cut() -> None:
    req = build_request(
        target("webhook", "https://example.com/hook"),
        notice(prompt="p" * 9000, summary="s" * 100, error="e" * 8001),
        now=NOW,
        message_id="m",
        environ={},
    )
    data = json.loads(req.body)["data"]
    assert data["prompt"] == "p" * 7999 + "…"
    assert data["summary"] == "s" * 100
    assert data["error"] == "e" * 7999 + "…"


def test_webhook_without_secret_is_unsigned() -> None:
    req = build_request(
        target("webhook", "https://example.com/hook"), notice(), now=NOW, message_id="m", environ={}
    )
    assert "webhook-signature" not in req.headers
    assert req.headers["webhook-id"] == "m"
    assert req.headers["webhook-timestamp"] == str(int(NOW.timestamp()))


@pytest.mark.parametrize("message_id", ["", "msg.1", "msg 1", "msg\n1"])
def test_a_message_id_that_could_confuse_the_signature_is_refused(message_id: str) -> None:
    with pytest.raises(InvalidInput):
        build_request(
            target("webhook", "https://e.com/h", secret=SECRET),
            notice(),
            now=NOW,
            message_id=message_id,
            environ={},
        )


def test_webhook_retries_keep_the_id_and_every_attempt_verifies(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/hook", Reply(500), Reply(503))
    notifier, recorder = make_notifier(
        [target("webhook", receiver.url("/hook"), secret="env:HOOK_SECRET")],
        environ={"HOOK_SECRET": SECRET},
    )
    notifier.notify(notice(state="failed", error="exit 1"))
    assert notifier.wait_idle(WAIT)
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


def test_missing_env_secret_is_a_recorded_failure_not_an_exception(
    receiver: Receiver, make_notifier: Any
) -> None:
    notifier, recorder = make_notifier(
        [target("webhook", receiver.url("/hook"), secret="env:HOOK_SECRET")], environ={}
    )
    notifier.notify(notice())  # must not raise
    assert notifier.wait_idle(WAIT)
    delivery = recorder.only()
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.status_code is None
    assert delivery.error is not None
    assert "HOOK_SECRET" in delivery.error
    assert "not set" in delivery.error
    assert receiver.at("/hook") == []


def test_malformed_env_secret_is_reported_without_echoing_it(
    receiver: Receiver, make_notifier: Any
) -> None:
    bad = "whsec_not*base64*at*all"
    notifier, recorder = make_notifier(
        [target("webhook", receiver.url("/hook"), secret="env:HOOK_SECRET")],
        environ={"HOOK_SECRET": bad},
    )
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    delivery = recorder.only()
    assert not delivery.ok
    assert delivery.error is not None
    assert "base64" in delivery.error
    assert "env:HOOK_SECRET" in delivery.error
    assert "not*base64" not in delivery.error
    assert "\n" not in delivery.error
    assert receiver.at("/hook") == []


# ------------------------------------------------------------------ filtering


@pytest.mark.parametrize(
    ("on", "state", "files_changed", "expected"),
    [
        ({"succeeded"}, "succeeded", 0, True),
        ({"failed"}, "succeeded", 3, False),
        ({"needs-review"}, "succeeded", 2, True),
        ({"needs-review"}, "succeeded", 0, False),
        ({"needs-review"}, "succeeded", None, False),
        ({"needs-review"}, "merged", 2, False),
        ({"needs-review"}, "failed", 2, False),
        ({"merged"}, "merged", 2, True),
        ({"timed_out", "canceled"}, "canceled", None, True),
    ],
)
def test_state_filter_and_needs_review_alias(
    on: set[str], state: str, files_changed: int | None, expected: bool
) -> None:
    t = target("ntfy", "https://ntfy.sh/t", on)
    assert matches(t, notice(state=state, files_changed=files_changed)) is expected


def test_only_matching_targets_are_sent_to(receiver: Receiver, make_notifier: Any) -> None:
    targets = [
        target("ntfy", receiver.url("/failed-only"), {"failed"}),
        target("ntfy", receiver.url("/review"), {"needs-review"}),
        target("webhook", receiver.url("/both"), {"succeeded", "needs-review"}),
    ]
    notifier, recorder = make_notifier(targets)
    notifier.notify(notice(state="succeeded", files_changed=4))
    notifier.notify(notice(job_id=13, state="succeeded", files_changed=0))
    assert notifier.wait_idle(WAIT)
    assert receiver.at("/failed-only") == []
    assert len(receiver.at("/review")) == 1
    assert len(receiver.at("/both")) == 2  # once per notice, even when two entries match
    assert sorted((d.job_id, d.url.split("/")[-1]) for d in recorder.deliveries) == [
        (12, "both"),
        (12, "review"),
        (13, "both"),
    ]


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_retry_then_success(status: int, receiver: Receiver, make_notifier: Any) -> None:
    receiver.plan("/t", Reply(status), Reply(status))
    notifier, recorder = make_notifier([target("ntfy", receiver.url("/t"))])
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    assert len(receiver.at("/t")) == 3
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code, delivery.error) == (
        True,
        3,
        200,
        None,
    )


def test_final_failure_after_n_attempts(receiver: Receiver, make_notifier: Any) -> None:
    receiver.plan("/t", *[Reply(500, body=b"database\ndown")] * 10)
    notifier, recorder = make_notifier([target("ntfy", receiver.url("/t"))], attempts=3)
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    assert len(receiver.at("/t")) == 3
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (False, 3, 500)
    assert delivery.error == "HTTP 500: database down"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_not_retried(status: int, receiver: Receiver, make_notifier: Any) -> None:
    receiver.plan("/services/T/B/t", Reply(status, body=b"invalid_payload"))
    notifier, recorder = make_notifier([target("slack", receiver.url("/services/T/B/t"))])
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    assert len(receiver.at("/services/T/B/t")) == 1
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (False, 1, status)
    assert delivery.error == f"HTTP {status}: invalid_payload"


def test_connection_errors_are_retried(make_notifier: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier, recorder = make_notifier([target("ntfy", f"http://127.0.0.1:{port}/t")], attempts=2)
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (False, 2, None)
    assert delivery.error is not None
    assert delivery.error.startswith("connection failed")


def test_timeouts_are_retried(receiver: Receiver, make_notifier: Any) -> None:
    receiver.plan("/slow", Reply(delay=1.0), Reply(delay=1.0))
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/slow"))], attempts=2, timeout=0.2
    )
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    assert len(receiver.at("/slow")) == 2
    delivery = recorder.only()
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.error == "timed out after 0.2s"


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("1000", 60.0)],
)
def test_retry_after_is_honoured_up_to_max_backoff(
    retry_after: str, expected: float, receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/t", Reply(429, {"Retry-After": retry_after}))
    clock = FakeClock()
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/t"))],
        backoff=1.0,
        max_backoff=60.0,
        workers=1,
        clock=clock.time,
        sleep=clock.sleep,
    )
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    assert clock.sleeps == [expected]
    assert recorder.only().attempts == 2


def test_backoff_is_exponential_with_jitter_and_capped(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan(
        "/t",
        *[Reply(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})] * 5,  # a date: ignored
    )
    clock = FakeClock()
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/t"))],
        attempts=5,
        backoff=1.0,
        max_backoff=3.0,
        workers=1,
        clock=clock.time,
        sleep=clock.sleep,
        rng=random.Random(7),
    )
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    sleeps = clock.sleeps
    assert len(sleeps) == 4
    for delay, base in zip(sleeps, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert base / 2 <= delay <= base, sleeps
    assert len(set(sleeps)) == 4  # jittered
    assert recorder.only().attempts == 5


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
    assert notifier.wait_idle(WAIT)
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
    assert notifier.wait_idle(WAIT)
    assert len(recorder.deliveries) == 8
    assert all(d.ok for d in recorder.deliveries)


def test_a_failing_endpoint_does_not_hold_up_others_and_stop_drops_pending_work(
    receiver: Receiver, make_notifier: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatcher.notify")
    receiver.plan("/down", *[Reply(500)] * 5)
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/down")), target("ntfy", receiver.url("/up"))],
        backoff=30.0,
    )
    notifier.notify(notice())
    deadline = time.monotonic() + WAIT
    while "retry 2/5" not in caplog.text or not recorder.deliveries:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.01)
    assert [d.url.split("/")[-1] for d in recorder.deliveries] == ["up"]
    assert len(receiver.at("/down")) == 1
    assert not notifier.wait_idle(0.05)  # the retry of /down is still pending
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


class Settled:
    def __init__(self) -> None:
        self.notices: list[JobNotice] = []
        self.event = threading.Event()

    def __call__(self, n: JobNotice) -> None:
        self.notices.append(n)
        self.event.set()


def test_a_notice_settles_once_every_delivery_has_a_final_outcome(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/flaky", Reply(503), Reply(503))
    receiver.plan("/bad", Reply(404))
    settled = Settled()
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/flaky")), target("webhook", receiver.url("/bad")),
         target("ntfy", receiver.url("/off"), {"failed"})],
        settled=settled,
    )  # fmt: skip
    notifier.notify(notice())
    assert settled.event.wait(WAIT)
    assert settled.notices == [notice()]
    # Both deliveries were final by then (the 404 given up on, the 503s retried to a 200);
    # the target that does not want "succeeded" was never a delivery.
    assert sorted((d.url.split("/")[-1], d.ok) for d in recorder.deliveries) == [
        ("bad", False), ("flaky", True)
    ]  # fmt: skip
    assert len(receiver.at("/flaky")) == 3
    assert notifier.wait_idle(WAIT)
    assert len(settled.notices) == 1


def test_a_notice_for_no_target_settles_at_once(make_notifier: Any) -> None:
    settled = Settled()
    notifier, recorder = make_notifier([], settled=settled)
    notifier.notify(notice(state="failed"))
    assert settled.event.wait(WAIT)
    assert settled.notices == [notice(state="failed")] and recorder.deliveries == []


def test_a_notice_still_retrying_at_stop_never_settles(
    receiver: Receiver, make_notifier: Any
) -> None:
    receiver.plan("/down", *[Reply(500)] * 5)
    settled = Settled()
    notifier, recorder = make_notifier(
        [target("ntfy", receiver.url("/down")), target("ntfy", receiver.url("/up"))],
        backoff=30.0, settled=settled,
    )  # fmt: skip
    notifier.notify(notice())
    receiver.wait_for(2)
    deadline = time.monotonic() + WAIT
    while not recorder.deliveries:  # /up done; /down waits 15-30 s for its retry
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert notifier.stop(timeout=15)
    assert settled.notices == []  # still owed: the caller keeps its mark


def test_skipped_targets_are_not_sent_and_ids_are_stable_across_notifiers(
    receiver: Receiver, make_notifier: Any
) -> None:
    targets = [target("webhook", receiver.url("/a")), target("webhook", receiver.url("/b?k=s"))]
    first, _ = make_notifier(targets)
    first.notify(notice())
    receiver.wait_for(2)
    ids = {r.path: r.headers["webhook-id"] for r in receiver.requests}
    settled = Settled()
    again, recorder = make_notifier(targets, settled=settled)  # as a restarted daemon
    again.notify(notice(), skip=[message_id_for(notice(), targets[0])])
    assert settled.event.wait(WAIT)
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

    notifier = Notifier(targets_for, record, environ={}, backoff=0.01)
    notifier.start()
    try:
        with caplog.at_level(logging.ERROR, logger="dispatcher.notify"):
            notifier.notify(notice(job_id=1))
            notifier.notify(notice(job_id=2))
            notifier.notify(notice(job_id=3))
            assert notifier.wait_idle(WAIT)
    finally:
        assert notifier.stop(timeout=WAIT)
    assert sorted(calls) == [2, 3]
    assert len(receiver.at("/t")) == 2
    assert "config unreadable" in caplog.text
    assert "database is locked" in caplog.text


def test_delivery_url_is_redacted(receiver: Receiver, make_notifier: Any) -> None:
    url = f"http://user:pw@127.0.0.1:{receiver.port}/topic?auth=tok123&x=1"
    notifier, recorder = make_notifier([target("ntfy", url)])
    notifier.notify(notice())
    assert notifier.wait_idle(WAIT)
    [got] = receiver.at("/topic")
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert recorder.only().url == f"http://127.0.0.1:{receiver.port}/topic?auth=***&x=***"


def test_redaction_and_repr_hide_secrets() -> None:
    assert (
        redact_url("https://hooks.slack.com/services/T0/B0/SECRET", secret_path=True)
        == "https://hooks.slack.com/services/T0/B0/***"
    )
    t = Target("slack", "https://hooks.slack.com/services/T0/B0/SECRET", frozenset({"failed"}))
    assert "SECRET" not in repr(t)
    w = Target("webhook", "https://e.com/h", frozenset({"failed"}), secret=SECRET)
    assert SECRET not in repr(w)
    assert SECRET.removeprefix("whsec_") not in repr(w)


def test_custom_client_is_used_and_not_closed(receiver: Receiver) -> None:
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append(request.headers["user-agent"])

    with httpx.Client(event_hooks={"request": [hook]}) as client:
        notifier = Notifier(
            lambda _n: [target("ntfy", receiver.url("/t"))], Recorder(), client=client, environ={}
        )
        notifier.start()
        notifier.notify(notice())
        assert notifier.wait_idle(WAIT)
        assert notifier.stop(timeout=WAIT)
        assert not client.is_closed
    assert len(seen) == 1
    assert seen[0].startswith("worktree-dispatcher/")


# ------------------------------------------------------------------ validate_target


def test_validate_target_accepts_a_full_entry() -> None:
    t = validate_target(
        {
            "type": "ntfy",
            "url": " https://ntfy.sh/topic ",
            "on": ["failed", "needs-review"],
            "priority": 5,
            "tags": "robot, ci",
        }
    )
    assert t == Target(
        "ntfy",
        "https://ntfy.sh/topic",
        frozenset({"failed", "needs-review"}),
        None,
        "5",
        ("robot", "ci"),
    )


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "webhook", "url": "https://e.com/h", "secret": SECRET, "on": "merged"},
        {"type": "webhook", "url": "https://e.com/h", "secret": "env:HOOK_SECRET"},  # unset: fine
        {"type": "slack", "url": "http://localhost:8080/x", "secret": None, "tags": None},
        {"type": "webhook", "url": "https://e.com/h", "secret": SECRET.rstrip("=")},  # unpadded
    ],
)
def test_validate_target_accepts(raw: dict[str, Any]) -> None:
    t = validate_target(raw)
    assert t.type == raw["type"]
    assert t.on == (frozenset({"merged"}) if "on" in raw else frozenset({"succeeded", "failed"}))


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"type": "email", "url": "https://e.com"}, "unknown type 'email'"),
        ({"url": "https://e.com"}, "unknown type missing"),
        ({"type": "ntfy", "url": "ftp://e.com/x"}, "http:// or https://"),
        ({"type": "ntfy", "url": "ntfy.sh/topic"}, "http:// or https://"),
        ({"type": "ntfy", "url": "https://"}, "no host"),
        ({"type": "ntfy", "url": "https://e.com/a b"}, "spaces"),
        ({"type": "ntfy", "url": "https://e.com:99999/"}, "not a valid URL"),
        ({"type": "ntfy"}, "url is required"),
        ({"type": "ntfy", "url": "https://e.com", "on": ["succeeded", "done"]}, "'done'"),
        ({"type": "ntfy", "url": "https://e.com", "on": []}, "at least one"),
        ({"type": "ntfy", "url": "https://e.com", "on": {"a": 1}}, "list of job states"),
        ({"type": "ntfy", "url": "https://e.com", "secret": SECRET}, "only used by type webhook"),
        ({"type": "slack", "url": "https://e.com", "secret": SECRET}, "only used by type webhook"),
        ({"type": "webhook", "url": "https://e.com", "secret": "hunter2hunter2"}, "'whsec_'"),
        ({"type": "webhook", "url": "https://e.com", "secret": "whsec_hunter2!!"}, "base64"),
        (
            {"type": "webhook", "url": "https://e.com", "secret": "whsec_aHVudGVyMg=="},
            "24-64 bytes",
        ),
        ({"type": "webhook", "url": "https://e.com", "secret": "env:1BAD"}, "variable name"),
        ({"type": "webhook", "url": "https://e.com", "secret": "env:"}, "variable name"),
        ({"type": "ntfy", "url": "https://e.com", "priority": "loud"}, "priority must be"),
        ({"type": "ntfy", "url": "https://e.com", "priority": 9}, "priority must be"),
        ({"type": "slack", "url": "https://e.com", "priority": "high"}, "only used by type ntfy"),
        ({"type": "webhook", "url": "https://e.com", "tags": ["x"]}, "only used by type ntfy"),
        ({"type": "ntfy", "url": "https://e.com", "tags": ["a", ""]}, "non-empty"),
        ({"type": "ntfy", "url": "https://e.com", "secert": "x"}, "unknown key(s) secert"),
    ],
)
def test_validate_target_errors(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_target(raw)
    message = caught.value.message
    assert needle in message
    assert "\n" not in message
    secret = raw.get("secret")
    if isinstance(secret, str) and not secret.startswith("env:"):
        assert secret not in message
        assert secret.removeprefix("whsec_") not in message


def test_validate_target_needs_a_mapping() -> None:
    with pytest.raises(InvalidInput, match="mapping"):
        validate_target(["ntfy"])  # type: ignore[arg-type]
