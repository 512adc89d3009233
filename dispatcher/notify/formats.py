"""Payload formats: the exact HTTP request that tells a target about a notice, one format per type.

- ntfy: a plain-text body under ntfy's attachment limit, with ``Title``,
  ``Priority``, ``Tags`` and ``Click`` headers (non-ASCII text as RFC 2047
  encoded-words).
- Slack: Block Kit JSON, its mrkdwn texts escaped and every text cut to its block's limit.
- webhook: a Standard Webhooks JSON event, signed when the target has a secret
  (:mod:`dispatcher.notify.signing`).

:func:`build_request` is pure: no I/O; the clock and the environment are arguments.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from dispatcher import __version__
from dispatcher.errors import InvalidInput
from dispatcher.notify.notices import JobNotice, needs_review
from dispatcher.notify.signing import resolve_secret, sign
from dispatcher.notify.targets import Target

USER_AGENT = f"worktree-dispatcher/{__version__}"

SLACK_HEADER_MAX = 150  # header block plain_text
SLACK_SECTION_MAX = 3000  # section block text
SLACK_FIELD_MAX = 2000  # each section field
NTFY_BODY_MAX_BYTES = 4000  # ntfy turns bodies over 4096 bytes into attachments
TITLE_MAX = 200
WEBHOOK_TEXT_MAX = 8000  # prompt, summary and error in the webhook payload

_MESSAGE_ID = re.compile(r"[A-Za-z0-9_:-]{1,200}")
_EVENT_WORD = re.compile(r"[^A-Za-z0-9_]")

# Emoji short codes, understood by both ntfy (Tags) and Slack (":name:").
_STATE_EMOJI: dict[str, str] = {
    "queued": "inbox_tray",
    "preparing": "gear",
    "running": "runner",
    "succeeded": "white_check_mark",
    "failed": "x",
    "timed_out": "hourglass",
    "canceled": "no_entry_sign",
    "merged": "tada",
    "discarded": "wastebasket",
    "gave-up": "raising_hand",
}
_URGENT_STATES = frozenset({"failed", "timed_out", "gave-up"})


@dataclass(frozen=True)
class Request:
    """One HTTP request, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def build_request(
    target: Target,
    notice: JobNotice,
    *,
    now: datetime,
    message_id: str,
    environ: Mapping[str, str],
    occurred_at: datetime | None = None,
) -> Request:
    """The HTTP request that tells ``target`` about ``notice``. Pure, no I/O.

    ``now`` is the attempt time (the webhook-timestamp); ``occurred_at`` (default
    ``now``) is when the job reached its state (the payload's ``timestamp``).
    ``message_id`` is the webhook-id, which must stay the same across retries.
    Raises :class:`InvalidInput` for a webhook secret that cannot be used.
    """
    if not _MESSAGE_ID.fullmatch(message_id):
        raise InvalidInput("message_id must be 1-200 of A-Z a-z 0-9 _ : -")
    if target.type == "ntfy":
        return _ntfy_request(target, notice)
    if target.type == "slack":
        return _slack_request(target, notice)
    return _webhook_request(
        target,
        notice,
        now=now,
        message_id=message_id,
        environ=environ,
        occurred_at=occurred_at or now,
    )


def _ntfy_request(target: Target, notice: JobNotice) -> Request:
    priority = target.priority or ("high" if notice.state in _URGENT_STATES else "default")
    tags = [_STATE_EMOJI.get(notice.state, "bell")]
    if needs_review(notice):
        tags.append("eyes")
    tags.extend(target.tags)
    headers = {
        "User-Agent": USER_AGENT,
        "Content-Type": "text/plain; charset=utf-8",
        "Title": header_text(_title(notice), TITLE_MAX),
        "Priority": header_text(priority, 20),
        "Tags": header_text(",".join(tags), 500),
    }
    if notice.url:
        click = _header_url(notice.url)
        if click:
            headers["Click"] = click
    text = _state_line(notice)
    detail = _detail(notice)
    if detail:
        text += "\n\n" + detail
    return Request("POST", target.url, headers, _clip_bytes(text, NTFY_BODY_MAX_BYTES))


def _slack_request(target: Target, notice: JobNotice) -> Request:
    emoji = _STATE_EMOJI.get(notice.state, "bell")
    title = _title(notice)
    fields = [
        _slack_field("Repo", notice.repo),
        _slack_field("State", f":{emoji}: {_state_label(notice)}"),
    ]
    if notice.branch:
        fields.append(_slack_field("Branch", notice.branch))
    changes = _changes(notice)
    if changes:
        fields.append(_slack_field("Changes", changes))
    if notice.cost_usd is not None:
        fields.append(_slack_field("Cost", f"${notice.cost_usd:.2f}"))
    blocks: list[dict[str, object]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(title, SLACK_HEADER_MAX), "emoji": True},
        },
        {"type": "section", "fields": fields},
    ]
    detail = _detail(notice)
    if detail:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": mrkdwn(detail, SLACK_SECTION_MAX)},
            }
        )
    if notice.url:
        link = re.sub(r"[<>|\s]", lambda m: quote(m.group(0)), notice.url).replace("&", "&amp;")
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{link}|Job {notice.job_id}>"}],
            }
        )
    fallback = f":{emoji}: Job {notice.job_id} {_state_label(notice)} in {notice.repo}: {title}"
    payload = {"text": mrkdwn(fallback, SLACK_SECTION_MAX), "blocks": blocks}
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json; charset=utf-8"}
    return Request("POST", target.url, headers, _json(payload))


def _slack_field(name: str, value: str) -> dict[str, str]:
    label = f"*{name}*\n"
    return {"type": "mrkdwn", "text": label + mrkdwn(value, SLACK_FIELD_MAX - len(label))}


def _webhook_request(
    target: Target,
    notice: JobNotice,
    *,
    now: datetime,
    message_id: str,
    environ: Mapping[str, str],
    occurred_at: datetime,
) -> Request:
    data: dict[str, object] = dataclasses.asdict(notice)
    for key in ("prompt", "summary", "error"):
        value = data[key]
        if isinstance(value, str):
            data[key] = clip(value, WEBHOOK_TEXT_MAX)
    data["needs_review"] = needs_review(notice)
    payload = {
        "type": f"job.{_EVENT_WORD.sub('_', notice.state)}",
        "timestamp": _iso(occurred_at),
        "data": data,
    }
    body = _json(payload)
    timestamp = int(_aware(now).timestamp())
    headers = {
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
    }
    if target.secret:
        secret_key = resolve_secret(target.secret, environ)
        headers["webhook-signature"] = sign(secret_key, message_id, timestamp, body)
    return Request("POST", target.url, headers, body)


# ------------------------------------------------------------------ text helpers


def header_text(text: str, limit: int) -> str:
    """``text`` as a safe HTTP header value: printable ASCII, one line.

    Control characters and line breaks become single spaces; the text is cut to
    ``limit`` characters. Non-ASCII text (or ASCII that looks like an encoded
    word) is sent as RFC 2047 encoded-words (``=?utf-8?b?...?=``, at most 75
    characters each, whole characters only), which ntfy decodes.
    """
    chars = []
    for ch in text:
        category = unicodedata.category(ch)
        chars.append(" " if category == "Cc" else "\ufffd" if category == "Cs" else ch)
    cleaned = clip(" ".join("".join(chars).split()), limit)
    if cleaned.isascii() and "=?" not in cleaned:
        return cleaned
    return _encoded_words(cleaned)


def _encoded_words(text: str) -> str:
    # "=?utf-8?b?" + base64 + "?=" <= 75 characters: at most 60 base64 chars = 45 bytes.
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if chunk and size + n > 45:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    if chunk:
        words.append("".join(chunk))
    return " ".join(
        "=?utf-8?b?" + base64.b64encode(word.encode("utf-8")).decode("ascii") + "?="
        for word in words
    )


def _header_url(url: str) -> str:
    cleaned = "".join(
        ch for ch in url.strip() if not ch.isspace() and unicodedata.category(ch)[0] != "C"
    )
    return quote(cleaned, safe="!#$%&'()*+,/:;=?@[]~")


def mrkdwn(text: str, limit: int) -> str:
    """``text`` escaped for Slack mrkdwn (``&`` ``<`` ``>``), at most ``limit`` characters.

    Cut on whole characters before escaping, so an entity is never split; a cut
    text ends with an ellipsis.
    """
    out: list[str] = []
    size = 0
    for i, ch in enumerate(text):
        piece = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(ch, ch)
        rest = i + 1 < len(text)
        if size + len(piece) + (1 if rest else 0) > limit:
            out.append("…")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters; a cut text ends with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _clip_bytes(text: str, limit: int) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    return (data[: limit - 3].decode("utf-8", "ignore") + "…").encode("utf-8")


def _title(notice: JobNotice) -> str:
    for line in notice.prompt.splitlines():
        if line.strip():
            return line.strip()
    return f"Job {notice.job_id}"


def _state_label(notice: JobNotice) -> str:
    label = notice.state.replace("_", " ")
    return f"{label} (needs review)" if needs_review(notice) else label


def _changes(notice: JobNotice) -> str | None:
    if notice.files_changed is None:
        return None
    text = f"{notice.files_changed} file{'' if notice.files_changed == 1 else 's'} changed"
    if notice.insertions is not None or notice.deletions is not None:
        text += f", +{notice.insertions or 0} -{notice.deletions or 0}"
    return text


def _state_line(notice: JobNotice) -> str:
    line = f"Job {notice.job_id} {_state_label(notice)} in {notice.repo}"
    if notice.branch:
        line += f" on {notice.branch}"
    extras = [text for text in (_changes(notice),) if text]
    if notice.cost_usd is not None:
        extras.append(f"${notice.cost_usd:.2f}")
    if extras:
        line += ": " + ", ".join(extras)
    return line


def _detail(notice: JobNotice) -> str | None:
    """The error for failed/timed-out jobs, else the summary (or the error if no summary)."""
    if notice.state in _URGENT_STATES and notice.error:
        return notice.error.strip() or None
    text = notice.summary or notice.error
    return (text.strip() or None) if text else None


def _json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")
