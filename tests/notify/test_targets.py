"""Notify targets: config entries validated (one clear line per problem), matching, redaction."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.errors import InvalidInput
from dispatcher.notify.targets import Target, matches, redact_url, validate_target
from tests.notify.helpers import SECRET, notice, target


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
