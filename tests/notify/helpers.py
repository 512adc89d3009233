"""What the notify tests share: a notice and targets to send, a local receiver, a recorder.

Deliveries go over real HTTP to a local receiver (ThreadingHTTPServer on
127.0.0.1, port 0) that records each request and answers from a per-path plan
(500, 429 with Retry-After, a slow answer, a redirect). Signatures are checked
with an independent few-line implementation of the spec (:func:`verify`), not
with the package.
"""

from __future__ import annotations

import base64
import email.header
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dispatcher.notify.delivery import Delivery
from dispatcher.notify.notices import JobNotice
from dispatcher.notify.targets import Target

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
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
    """Standard Webhooks verification, written from the spec (independent of the package)."""
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


class Recorder:
    """The ``record`` of a notifier, and (:meth:`settle`) its ``settled``."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.settled: list[JobNotice] = []
        self.cond = threading.Condition()

    def __call__(self, delivery: Delivery) -> None:
        with self.cond:
            self.deliveries.append(delivery)

    def settle(self, notice: JobNotice) -> None:
        with self.cond:
            self.settled.append(notice)
            self.cond.notify_all()

    def wait_settled(self, count: int = 1, timeout: float = WAIT) -> bool:
        """Wait until ``count`` notices have settled (every delivery has a final outcome)."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.settled) >= count, timeout)

    def only(self) -> Delivery:
        with self.cond:
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
