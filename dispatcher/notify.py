"""Job notifications: ntfy, Slack, and Standard-Webhooks-signed generic webhooks.

Three layers, each usable on its own:

- :func:`validate_target` turns one ``notify:`` config entry into a :class:`Target`
  (or raises :class:`~dispatcher.errors.InvalidInput` with one clear line).
- :func:`build_request` turns a (:class:`Target`, :class:`JobNotice`) pair into the
  exact HTTP :class:`Request` to send. Pure: no I/O, the clock and the environment
  are arguments.
- :class:`Notifier` delivers in the background, with retries, and reports every
  final outcome as a :class:`Delivery` to a ``record`` callback.

Guarantee: :meth:`Notifier.notify` only enqueues (it never blocks and never
raises), so a notification can never delay or fail a job. Every delivery that
reaches a final outcome (sent, or given up) is recorded; when every delivery of
a notice has, ``settled`` is called, so the caller can keep a durable "still
owed" mark until then and notify again after a restart (``skip`` leaves out the
targets already done). Message ids are derived from the job, the state and the
target, so a delivery sent again carries the same ``webhook-id``.

The module knows nothing of the database: the caller adapts a job row to a
:class:`JobNotice`. See ``docs/notifications.md``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpx

from dispatcher import __version__
from dispatcher.errors import InvalidInput
from dispatcher.lifecycle import JobState

log = logging.getLogger(__name__)

TargetType = Literal["ntfy", "slack", "webhook"]
TARGET_TYPES: tuple[TargetType, ...] = ("ntfy", "slack", "webhook")

NEEDS_REVIEW = "needs-review"
"""Alias usable in ``on``: a *succeeded* job with changed files (waiting for review)."""

JOB_STATES: frozenset[str] = frozenset(state.value for state in JobState)
NOTIFY_STATES: frozenset[str] = JOB_STATES | {NEEDS_REVIEW}
DEFAULT_ON: frozenset[str] = frozenset({"succeeded", "failed"})
"""What ``on`` means when a config entry leaves it out (same as triggers.yml)."""

NTFY_PRIORITIES = ("max", "urgent", "high", "default", "low", "min", "1", "2", "3", "4", "5")
USER_AGENT = f"worktree-dispatcher/{__version__}"

SLACK_HEADER_MAX = 150  # header block plain_text
SLACK_SECTION_MAX = 3000  # section block text
SLACK_FIELD_MAX = 2000  # each section field
NTFY_BODY_MAX_BYTES = 4000  # ntfy turns bodies over 4096 bytes into attachments
TITLE_MAX = 200
WEBHOOK_TEXT_MAX = 8000  # prompt, summary and error in the webhook payload
SECRET_MIN_BYTES = 24  # Standard Webhooks: "at least 24 bytes", at most 64
SECRET_MAX_BYTES = 64
MAX_REDIRECTS = 3

_KEYS = ("type", "url", "on", "secret", "priority", "tags")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
}
_URGENT_STATES = frozenset({"failed", "timed_out"})


# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class Target:
    """One place to send notifications to (one validated ``notify:`` entry).

    ``secret`` (webhook only) is ``whsec_<base64>`` or ``env:NAME``, read from the
    daemon's environment when a request is built. ``priority`` and ``tags`` are
    ntfy extras. Neither the secret nor the URL (a Slack URL is itself a secret)
    appears in ``repr``.
    """

    type: TargetType
    url: str
    on: frozenset[str]
    secret: str | None = None
    priority: str | None = None
    tags: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Target(type={self.type!r}, url={_redacted(self)!r}, "
            f"on={sorted(self.on)!r}, secret={'***' if self.secret else None!r}, "
            f"priority={self.priority!r}, tags={self.tags!r})"
        )


@dataclass(frozen=True)
class JobNotice:
    """What is sent about a job; built by the caller from a job row."""

    job_id: int
    repo: str
    state: str
    branch: str | None
    prompt: str  # the first non-blank line is the title
    summary: str | None
    error: str | None
    url: str | None  # link to the job in the API, e.g. http://127.0.0.1:8765/jobs/12
    cost_usd: float | None = None
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None


@dataclass(frozen=True)
class Request:
    """One HTTP request, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Delivery:
    """The final outcome of sending one notice to one target."""

    job_id: int
    target: TargetType
    url: str  # redacted: no userinfo, query values masked, Slack's secret path segment masked
    state: str
    ok: bool
    attempts: int
    status_code: int | None  # of the last attempt; None when no response came back
    error: str | None  # one line; never contains the webhook secret
    at: datetime  # UTC, when the outcome was reached
    message_id: str  # the webhook-id (for every type), stable across retries


# ------------------------------------------------------------------ validation


def validate_target(raw: Mapping[str, object]) -> Target:
    """Turn a config entry ``{type, url, on, secret, priority, tags}`` into a :class:`Target`.

    ``on`` defaults to ``[succeeded, failed]``. ``env:NAME`` secrets are only
    checked for form here; the variable is read when a request is built.
    Raises :class:`InvalidInput` with one line naming the problem.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput("notify: each entry must be a mapping with type, url and on")
    unknown = sorted(str(key) for key in raw if key not in _KEYS)
    if unknown:
        raise InvalidInput(
            f"notify: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(_KEYS)})"
        )
    kind = raw.get("type")
    if kind not in TARGET_TYPES:
        shown = (
            repr(kind) if isinstance(kind, str) else "missing" if kind is None else "not a string"
        )
        raise InvalidInput(f"notify: unknown type {shown}; expected ntfy, slack or webhook")
    ttype: TargetType = kind
    where = f"notify ({ttype})"

    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{where}: url is required")
    url = url.strip()
    _check_url(url, where)

    on = _parse_on(raw.get("on"), where)

    secret = raw.get("secret")
    if secret is not None:
        if ttype != "webhook":
            raise InvalidInput(f"{where}: secret is only used by type webhook")
        if not isinstance(secret, str):
            raise InvalidInput(f"{where}: secret must be a string ('whsec_...' or 'env:NAME')")
        secret = secret.strip()
        if secret.startswith("env:"):
            if not _ENV_NAME.fullmatch(secret[4:]):
                raise InvalidInput(f"{where}: secret 'env:NAME' needs a valid variable name")
        else:
            try:
                parse_secret(secret)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}: {exc.message}") from None

    priority = raw.get("priority")
    if priority is not None:
        if ttype != "ntfy":
            raise InvalidInput(f"{where}: priority is only used by type ntfy")
        if isinstance(priority, int) and not isinstance(priority, bool):
            priority = str(priority)
        if not isinstance(priority, str) or priority.strip().lower() not in NTFY_PRIORITIES:
            raise InvalidInput(
                f"{where}: priority must be one of {', '.join(NTFY_PRIORITIES[:6])} or 1-5"
            )
        priority = priority.strip().lower()

    tags = _parse_tags(raw.get("tags"), ttype, where)
    return Target(
        type=ttype,
        url=url,
        on=on,
        secret=secret,
        priority=priority,
        tags=tags,
    )


def _check_url(url: str, where: str) -> None:
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        raise InvalidInput(f"{where}: url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise InvalidInput(f"{where}: url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput(f"{where}: url must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInput(f"{where}: url has no host")


def _parse_on(value: object, where: str) -> frozenset[str]:
    if value is None:
        return DEFAULT_ON
    items: list[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise InvalidInput(f"{where}: on must be a list of job states")
    if not items:
        raise InvalidInput(f"{where}: on must name at least one job state")
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"{where}: on must be a list of job states (strings)")
    states = frozenset(cast("list[str]", items))
    bad = sorted(states - NOTIFY_STATES)
    if bad:
        raise InvalidInput(
            f"{where}: unknown state(s) in on: {', '.join(repr(b) for b in bad)} "
            f"(known: {', '.join(sorted(NOTIFY_STATES))})"
        )
    return states


def _parse_tags(value: object, ttype: TargetType, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if ttype != "ntfy":
        raise InvalidInput(f"{where}: tags are only used by type ntfy")
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidInput(f"{where}: tags must be a list of strings")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"{where}: tags must be a list of strings")
        tag = item.strip()
        if not tag or "," in tag or any(unicodedata.category(ch) == "Cc" for ch in tag):
            raise InvalidInput(
                f"{where}: each tag must be non-empty, without commas or control characters"
            )
        tags.append(tag)
    return tuple(tags)


# ------------------------------------------------------------------ filtering


def needs_review(notice: JobNotice) -> bool:
    """The ``needs-review`` alias: a succeeded job that changed files.

    A succeeded job is by definition neither merged nor discarded yet (those are
    later states). ``files_changed`` of ``None`` (unknown) or 0 does not count.
    """
    return notice.state == JobState.SUCCEEDED.value and (notice.files_changed or 0) > 0


def matches(target: Target, notice: JobNotice) -> bool:
    """Whether ``notice`` goes to ``target``: its state, or the needs-review alias, is in ``on``."""
    return notice.state in target.on or (NEEDS_REVIEW in target.on and needs_review(notice))


# ------------------------------------------------------------------ signing


def parse_secret(secret: str) -> bytes:
    """Decode a Standard Webhooks secret ``whsec_<base64>`` to its key bytes.

    Padding may be left out. The key must be 24 to 64 bytes (the spec's range).
    The error message never contains the secret.
    """
    secret = secret.strip()
    if not secret.startswith("whsec_"):
        raise InvalidInput("webhook secret must be 'whsec_' followed by base64, or 'env:NAME'")
    encoded = secret[len("whsec_") :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("webhook secret is not valid base64 after 'whsec_'") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise InvalidInput(
            f"webhook secret must decode to {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} bytes "
            f"(this one has {len(key)})"
        )
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature: ``v1,<base64(HMAC-SHA256(key, "id.ts.body"))>``."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def resolve_secret(secret: str, environ: Mapping[str, str]) -> bytes:
    """The key bytes of a target's secret; ``env:NAME`` is looked up in ``environ``."""
    if secret.startswith("env:"):
        name = secret[4:]
        value = environ.get(name)
        if not value:
            raise InvalidInput(
                f"webhook secret variable {name} is not set in the daemon's environment"
            )
        try:
            return parse_secret(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message} (from env:{name})") from None
    return parse_secret(secret)


# ------------------------------------------------------------------ request building


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
            "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_MAX), "emoji": True},
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
            data[key] = _clip(value, WEBHOOK_TEXT_MAX)
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
    cleaned = _clip(" ".join("".join(chars).split()), limit)
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


def _clip(text: str, limit: int) -> str:
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


def _one_line(text: str, limit: int = 200) -> str:
    return _clip(" ".join(text.split()), limit)


def _redacted(target: Target) -> str:
    return redact_url(target.url, secret_path=target.type == "slack")


def redact_url(url: str, *, secret_path: bool = False) -> str:
    """``url`` without userinfo, with query values masked, and (``secret_path``, for
    Slack, whose incoming-webhook URL is itself the secret) the last path segment masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host += f":{port}"
    path = parts.path
    if secret_path and path.strip("/"):
        segments = path.rstrip("/").split("/")
        segments[-1] = "***"
        path = "/".join(segments)
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, host, path, query, ""))


# ------------------------------------------------------------------ delivery


@dataclass
class _Expand:
    """A notice waiting for its targets to be looked up."""

    notice: JobNotice
    occurred_at: datetime
    skip: frozenset[str] = frozenset()  # message ids (:func:`message_id_for`) already done


@dataclass
class _Batch:
    """The deliveries of one notice that have not reached a final outcome."""

    notice: JobNotice
    remaining: int


@dataclass
class _Attempt:
    """One (notice, target) delivery, with its state across retries."""

    notice: JobNotice
    target: Target
    message_id: str
    occurred_at: datetime
    attempts: int = 0
    batch: _Batch | None = None


def message_id_for(notice: JobNotice, target: Target) -> str:
    """The webhook-id of ``notice`` to ``target``: the same on every retry and after a
    restart, so receivers can drop a repeat."""
    digest = hashlib.sha256(f"{target.type} {target.url}".encode()).hexdigest()[:16]
    return f"msg_{notice.job_id}_{notice.state}_{digest}"


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    retry: bool
    status: int | None
    error: str | None
    retry_after: float | None = None


_Item = _Expand | _Attempt


class Notifier:
    """Background delivery of job notices, with retries.

    ``targets_for(notice)`` lists the targets configured for the notice's repo
    (global and per-repo); it is called on a worker thread, so it may read
    files. A notice goes to each target whose ``on`` matches (:func:`matches`).
    Each (notice, target) delivery is tried up to ``attempts`` times: connection
    errors, timeouts, 408, 429 and 5xx are retried after an exponential backoff
    with jitter (``backoff * 2**(n-1)``, at most ``max_backoff``, randomised
    between half and all of it), or after a numeric ``Retry-After`` (capped at
    ``max_backoff``). Other statuses, redirects to another host, and a secret
    that cannot be used are final. Retries wait in a time-ordered queue, so a
    failing endpoint never holds up other deliveries; ``workers`` threads send
    in parallel so a slow endpoint does not either.

    Each final outcome is passed to ``record`` (exceptions from it are logged),
    and once every delivery of a notice has one (or no target matched), the
    notice to ``settled``. ``stop`` drops whatever is still queued, with a logged
    warning: those notices are never settled.

    ``clock`` (monotonic seconds) and ``sleep`` are test hooks: when ``sleep``
    is given, a worker waiting for a retry calls ``sleep(seconds)`` instead of
    waiting on its condition variable, so a fake clock can make time pass.
    """

    def __init__(
        self,
        targets_for: Callable[[JobNotice], Iterable[Target]],
        record: Callable[[Delivery], None],
        *,
        settled: Callable[[JobNotice], None] | None = None,
        client: httpx.Client | None = None,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        workers: int = 4,
        max_pending: int = 10_000,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._targets_for = targets_for
        self._record_cb = record
        self._settled_cb = settled
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._workers = workers
        self._max_pending = max_pending
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Item]] = []
        self._seq = itertools.count()
        self._inflight = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # -- public API

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        with self._cond:
            if self._stopped:
                raise RuntimeError("a stopped Notifier cannot be started again")
            if self._threads:
                return
            for n in range(self._workers):
                thread = threading.Thread(target=self._run, name=f"notify-{n}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the workers; drop pending deliveries (logged). True if every worker ended.

        An attempt already in flight finishes (bounded by the request timeout)
        and is recorded if it was final; it is not retried.
        """
        with self._cond:
            self._stopped = True
            dropped = len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        if dropped:
            log.warning(
                "notifier stopping: %d pending notification(s) dropped "
                "(not settled: still owed, for the next start)",
                dropped,
            )
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        done = not any(thread.is_alive() for thread in threads)
        if done and self._owns_client:
            self._client.close()
        return done

    def notify(self, notice: JobNotice, *, skip: Iterable[str] = ()) -> None:
        """Queue ``notice`` for delivery, except the deliveries whose message id
        (:func:`message_id_for`) is in ``skip``. Never blocks on the network, never raises."""
        try:
            with self._cond:
                if self._stopped:
                    log.warning("notifier stopped: notice for job %s dropped", notice.job_id)
                    return
                if len(self._heap) >= self._max_pending:
                    log.warning(
                        "notification queue full (%d): notice for job %s dropped",
                        self._max_pending,
                        notice.job_id,
                    )
                    return
                self._push_locked(
                    self._clock(), _Expand(notice, datetime.now(UTC), frozenset(skip))
                )
        except Exception:
            log.exception("could not queue a notification")

    def wait_idle(self, timeout: float) -> bool:
        """Wait (real time) until nothing is queued or in flight. For tests."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # -- scheduling

    def _push_locked(self, due: float, item: _Item) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))
        self._cond.notify_all()

    def _schedule(self, item: _Item, delay: float) -> bool:
        with self._cond:
            if self._stopped:
                return False
            self._push_locked(self._clock() + delay, item)
            return True

    def _next_locked(self) -> _Item | None:
        while not self._stopped:
            if not self._heap:
                self._cond.wait()
                continue
            remaining = self._heap[0][0] - self._clock()
            if remaining <= 0:
                return heapq.heappop(self._heap)[2]
            if self._sleep is not None:
                self._cond.release()
                try:
                    self._sleep(remaining)
                finally:
                    self._cond.acquire()
            else:
                self._cond.wait(remaining)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next_locked()
                if item is None:
                    return
                self._inflight += 1
            try:
                self._process(item)
            except Exception:
                log.exception("notification worker error")
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    # -- delivery

    def _process(self, item: _Item) -> None:
        if isinstance(item, _Expand):
            self._expand(item)
            return
        item.attempts += 1
        try:
            outcome = self._attempt(item)
        except Exception as exc:
            log.exception("notification attempt crashed")
            outcome = _Outcome(False, False, None, f"internal error: {type(exc).__name__}")
        if outcome.ok or not outcome.retry or item.attempts >= self._attempts:
            self._finish(item, outcome)
            return
        delay = self._delay(item.attempts, outcome.retry_after)
        log.info(
            "notification to %s for job %s failed (%s); retry %d/%d in %.1fs",
            item.target.type,
            item.notice.job_id,
            outcome.error,
            item.attempts + 1,
            self._attempts,
            delay,
        )
        if not self._schedule(item, delay):
            log.warning(
                "notifier stopped: retry of the %s notification for job %s dropped",
                item.target.type,
                item.notice.job_id,
            )

    def _expand(self, item: _Expand) -> None:
        try:
            targets = list(self._targets_for(item.notice))
        except Exception:
            log.exception("could not list notification targets for job %s", item.notice.job_id)
            return
        chosen = [
            t
            for t in targets
            if matches(t, item.notice) and message_id_for(item.notice, t) not in item.skip
        ]
        if not chosen:
            self._settle(item.notice)
            return
        batch = _Batch(item.notice, len(chosen))
        for target in chosen:
            task = _Attempt(
                item.notice, target, message_id_for(item.notice, target), item.occurred_at,
                batch=batch,
            )  # fmt: skip
            if not self._schedule(task, 0.0):
                log.warning("notifier stopped: notice for job %s dropped", item.notice.job_id)
                return

    def _settle(self, notice: JobNotice) -> None:
        if self._settled_cb is None:
            return
        try:
            self._settled_cb(notice)
        except Exception:
            log.exception("could not mark the notice for job %s settled", notice.job_id)

    def _delay(self, attempts_done: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._max_backoff)
        base = min(self._max_backoff, self._backoff * 2.0 ** min(attempts_done - 1, 60))
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def _attempt(self, task: _Attempt) -> _Outcome:
        try:
            request = build_request(
                task.target,
                task.notice,
                now=datetime.now(UTC),
                message_id=task.message_id,
                environ=self._environ,
                occurred_at=task.occurred_at,
            )
        except InvalidInput as exc:
            return _Outcome(False, False, None, exc.message)
        url = request.url
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                response = self._client.request(
                    request.method,
                    url,
                    headers=request.headers,
                    content=request.body,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
            except httpx.TimeoutException:
                return _Outcome(False, True, None, f"timed out after {self._timeout:g}s")
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
                reason = _one_line(str(exc)) or type(exc).__name__
                return _Outcome(False, True, None, f"connection failed: {reason}")
            except httpx.HTTPError as exc:
                reason = _one_line(str(exc)) or type(exc).__name__
                return _Outcome(False, False, None, f"request failed: {reason}")
            status = response.status_code
            if status not in (307, 308):
                break
            follow = _same_host_redirect(url, response.headers.get("location"))
            if follow is None:
                return _Outcome(
                    False,
                    False,
                    status,
                    f"HTTP {status}: redirect to another host (or to http) not followed; "
                    "update the URL",
                )
            url = follow
        else:
            return _Outcome(False, False, status, f"HTTP {status}: too many redirects")
        if 200 <= status < 300:
            return _Outcome(True, False, status, None)
        snippet = _one_line(response.text)
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if 300 <= status < 400:
            error += " (redirects other than 307/308 are not followed; update the URL)"
        retry = status in (408, 429) or status >= 500
        retry_after = _retry_after(response.headers.get("retry-after")) if retry else None
        return _Outcome(False, retry, status, error, retry_after)

    def _finish(self, task: _Attempt, outcome: _Outcome) -> None:
        target = task.target
        delivery = Delivery(
            job_id=task.notice.job_id,
            target=target.type,
            url=_redacted(target),
            state=task.notice.state,
            ok=outcome.ok,
            attempts=task.attempts,
            status_code=outcome.status,
            error=outcome.error,
            at=datetime.now(UTC),
            message_id=task.message_id,
        )
        if not outcome.ok:
            log.warning(
                "notification to %s %s for job %s failed after %d attempt(s): %s",
                delivery.target,
                delivery.url,
                delivery.job_id,
                delivery.attempts,
                delivery.error,
            )
        try:
            self._record_cb(delivery)
        except Exception:
            log.exception("could not record the notification outcome for job %s", delivery.job_id)
        batch = task.batch
        if batch is not None:
            with self._cond:
                batch.remaining -= 1
                done = batch.remaining == 0
            if done:
                self._settle(batch.notice)


def _retry_after(value: str | None) -> float | None:
    """A numeric ``Retry-After`` in seconds; HTTP dates and junk are ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None  # not NaN


def _same_host_redirect(current: str, location: str | None) -> str | None:
    """Where a 307/308 may be followed: the same host, never from https to http."""
    if not location:
        return None
    try:
        target = urljoin(current, location.strip())
        old, new = urlsplit(current), urlsplit(target)
    except ValueError:
        return None
    if new.scheme not in ("http", "https") or (old.scheme == "https" and new.scheme == "http"):
        return None
    if not new.hostname or (old.hostname or "").lower() != new.hostname.lower():
        return None
    return target
