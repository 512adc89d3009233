"""Notify targets: a ``notify:`` entry (trigger file or settings) validated into a :class:`Target`.

:func:`validate_target` raises :class:`~dispatcher.errors.InvalidInput` with one
clear line; :func:`matches` says whether a notice goes to a target.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit, urlunsplit

from dispatcher.errors import InvalidInput
from dispatcher.lifecycle import JobState
from dispatcher.notify.notices import (
    FIX_GAVE_UP,
    NEEDS_REVIEW,
    TEAM_BLOCKED,
    JobNotice,
    needs_review,
)
from dispatcher.notify.signing import parse_secret

TargetType = Literal["ntfy", "slack", "webhook"]
TARGET_TYPES: tuple[TargetType, ...] = ("ntfy", "slack", "webhook")

JOB_STATES: frozenset[str] = frozenset(state.value for state in JobState)
NOTIFY_STATES: frozenset[str] = JOB_STATES | {NEEDS_REVIEW, TEAM_BLOCKED, FIX_GAVE_UP}
DEFAULT_ON: frozenset[str] = frozenset({"succeeded", "failed"})
"""What ``on`` means when a config entry leaves it out (same as triggers.yml)."""

NTFY_PRIORITIES = ("max", "urgent", "high", "default", "low", "min", "1", "2", "3", "4", "5")

_KEYS = ("type", "url", "on", "secret", "priority", "tags")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
            f"Target(type={self.type!r}, url={self.shown_url!r}, "
            f"on={sorted(self.on)!r}, secret={'***' if self.secret else None!r}, "
            f"priority={self.priority!r}, tags={self.tags!r})"
        )

    @property
    def shown_url(self) -> str:
        """The URL as logs and records show it: :func:`redact_url`, Slack's path masked too."""
        return redact_url(self.url, secret_path=self.type == "slack")


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
    return Target(type=ttype, url=url, on=on, secret=secret, priority=priority, tags=tags)


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


def matches(target: Target, notice: JobNotice) -> bool:
    """Whether ``notice`` goes to ``target``: its state, or the needs-review alias, is in
    ``on``; a fix loop's ``gave-up`` goes where ``failed`` goes too."""
    if notice.state == FIX_GAVE_UP and "failed" in target.on:
        return True
    return notice.state in target.on or (NEEDS_REVIEW in target.on and needs_review(notice))


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
