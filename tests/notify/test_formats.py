"""Payload formats: the request built for each target type (headers, bodies, signatures)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.notify.formats import build_request
from tests.notify.helpers import (
    NOW,
    OTHER_SECRET,
    SECRET,
    decode_header,
    notice,
    target,
    verify,
)

PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


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
