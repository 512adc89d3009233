"""A stand-in for a model provider on 127.0.0.1: the OpenAI chat-completions API, enough
for a real agent CLI to finish a run (no network is needed, nor any key).

It answers every request with :data:`ANSWER` (streamed when asked) and the usage in
:data:`USAGE`, and keeps each request body so that a test can see what the agent sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Done: I read the task and changed nothing."
USAGE = {"prompt_tokens": 1200, "completion_tokens": 15, "total_tokens": 1215}


@dataclass
class StubModel:
    url: str
    """The server's root, e.g. ``http://127.0.0.1:PORT``."""
    requests: list[dict[str, Any]] = field(default_factory=list)

    def sent(self, text: str) -> bool:
        """Whether any request the agent made contains ``text``."""
        return any(text in json.dumps(body) for body in self.requests)


def _handler(stub: StubModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}")
            stub.requests.append(body)
            base = {"id": "chatcmpl-1", "created": int(time.time()), "model": body.get("model")}
            if not body.get("stream"):
                message = {"role": "assistant", "content": ANSWER}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._json(
                    {**base, "object": "chat.completion", "choices": [choice]} | {"usage": USAGE}
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {**base, "object": "chat.completion.chunk"}
            deltas = [{"role": "assistant", "content": ANSWER}, {}]
            for delta, finish in zip(deltas, [None, "stop"], strict=True):
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                self._event({**chunk, "choices": [choice]})
            self._event({**chunk, "choices": [], "usage": USAGE})
            self.wfile.write(b"data: [DONE]\n\n")

        def _event(self, event: object) -> None:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


@contextmanager
def stub_model() -> Iterator[StubModel]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(StubModel("")))
    stub = StubModel(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
