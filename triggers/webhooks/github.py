"""GitHub webhooks (and Gitea / Forgejo, which send compatible headers and payloads).

Three pure steps the ``POST /webhooks/github`` route runs in order:

1. :func:`verify` the signature over the raw body (401 when it fails);
2. read :func:`event_name`, :func:`delivery_id` and :func:`source_of` from the headers;
3. :func:`normalize` the parsed payload into an :class:`~triggers.events.Event`
   (``None``: an event type we do not handle, answered 202 "ignored").

Payloads are untrusted input even when signed (issue titles, branch names and
comment bodies are written by anyone who can open an issue). Nothing here
raises on a missing or odd-typed field: a field of the wrong type is treated as
absent. The fact extraction in :func:`normalize` also serves GitLab, whose
payloads :mod:`triggers.webhooks.gitlab` first maps to the GitHub shape.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from triggers.events import REF_DELETED, Event, EventKind, EventSource

HANDLED: frozenset[str] = frozenset(
    {"issues", "issue_comment", "pull_request", "push", "workflow_run", "check_run"}
)
"""Event types :func:`normalize` turns into events; any other is ignored."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_ZERO_SHA = re.compile(r"0+")
_MAX_DEDUP_KEY = 300  # Event.dedup_key's max_length

# Gitea/Forgejo spell some actions differently; the fact uses GitHub's word so
# one trigger file serves every forge (the payload keeps the original).
_GITEA_ACTIONS = {"synchronized": "synchronize"}


# --- headers ---------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name``, looked up case-insensitively (first one wins)."""
    value = headers.get(name)
    if isinstance(value, str):
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
            return value
    return None


def _first_header(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = header(headers, name)
        if value is not None and value.strip():
            return value.strip()
    return None


def verify(body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether ``body`` carries a valid HMAC-SHA256 signature made with ``secret``.

    ``X-Hub-Signature-256: sha256=<hex>`` (GitHub, and Gitea/Forgejo too) is
    checked when present; only when it is absent is Gitea's or Forgejo's plain
    hex ``X-Gitea-Signature`` / ``X-Forgejo-Signature`` accepted instead. A
    missing or malformed signature, or an empty secret, is never valid.
    """
    if not secret:
        return False
    expected = hmac.new(secret.encode("utf-8", "surrogatepass"), body, hashlib.sha256).hexdigest()
    hub = header(headers, "X-Hub-Signature-256")
    if hub is not None:
        algorithm, _, hex_digest = hub.strip().partition("=")
        return algorithm == "sha256" and _same_hex(expected, hex_digest)
    plain = _first_header(headers, "X-Gitea-Signature", "X-Forgejo-Signature")
    return plain is not None and _same_hex(expected, plain)


def _same_hex(expected: str, given: str) -> bool:
    # The shape check first: compare_digest refuses non-ASCII str, and a
    # length or alphabet mismatch reveals nothing about the secret.
    if not _HEX64.fullmatch(given):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii"))


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The forge's unique id for this delivery (retries of it reuse the id)."""
    return _first_header(headers, "X-GitHub-Delivery", "X-Gitea-Delivery", "X-Forgejo-Delivery")


def event_name(headers: Mapping[str, str]) -> str | None:
    """The event type (``issues``, ``push`` ...); the action is in the body."""
    return _first_header(headers, "X-GitHub-Event", "X-Gitea-Event", "X-Forgejo-Event")


def source_of(headers: Mapping[str, str]) -> Literal["github", "gitea"]:
    """``gitea`` when Gitea or Forgejo sent it (they add their own event header)."""
    if _first_header(headers, "X-Gitea-Event", "X-Forgejo-Event") is not None:
        return "gitea"
    return "github"


# --- payload access that never raises ----------------------------------------


def _obj(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return cast("Mapping[str, Any]", value) if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dig(value: object, *keys: str) -> object:
    """``value[k1][k2]...``, or ``None`` as soon as a step is not an object."""
    for key in keys:
        value = _obj(value).get(key)
    return value


def _label_names(labels: object) -> list[str]:
    names: list[str] = []
    for label in _list(labels):
        name = _str(_obj(label).get("name"))
        if name and name not in names:
            names.append(name)
    return names


def _sha(value: object) -> str | None:
    """A commit id, or ``None`` for a missing, malformed or all-zero one."""
    sha = _str(value)
    if sha is None or not _SHA.fullmatch(sha) or _ZERO_SHA.fullmatch(sha):
        return None
    return sha.lower()


def _branch_of_ref(ref: object) -> str | None:
    """``refs/heads/x`` -> ``x``; tags and other refs have no branch."""
    name = _str(ref)
    if name is None or not name.startswith("refs/heads/"):
        return None
    return name.removeprefix("refs/heads/") or None


def _title_and_body(item: Mapping[str, Any]) -> str | None:
    parts = [p for p in (_str(item.get("title")), _str(item.get("body"))) if p]
    return "\n".join(parts) if parts else None


def _paths(commits: object) -> list[str] | None:
    """The union of the commits' file lists; ``None`` when no commit lists any."""
    found = False
    paths: set[str] = set()
    for commit in _list(commits):
        for key in ("added", "modified", "removed"):
            files = _obj(commit).get(key)
            if isinstance(files, list):
                found = True
                paths.update(f for f in files if isinstance(f, str) and f)
    return sorted(paths) if found else None


def forge_repo(payload: Mapping[str, Any]) -> str | None:
    """``owner/name`` of the repository the delivery is about (for routing)."""
    return _str(_dig(payload, "repository", "full_name")) or None


def dedup_key(source: str, delivery: str) -> str:
    """``source:delivery``; an absurdly long delivery id is hashed to fit the column."""
    key = f"{source}:{delivery}"
    if len(key) > _MAX_DEDUP_KEY:
        digest = hashlib.sha256(delivery.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"{source}:sha256:{digest}"
    return key


# --- normalize -------------------------------------------------------------


def normalize(
    event: str, delivery: str, payload: Mapping[str, Any], *, source: str = "github"
) -> Event | None:
    """The :class:`Event` for a delivery, or ``None`` for an event type we ignore.

    ``payload`` is kept as-is (it is already GitHub-shaped); the filter facts
    are extracted from it. ``source`` is ``github``, ``gitea`` (Gitea/Forgejo)
    or ``gitlab`` (a payload :mod:`triggers.webhooks.gitlab` mapped).
    """
    body: object = payload  # untrusted: the route may hand over any JSON value
    if event not in HANDLED or not isinstance(body, Mapping):
        return None
    if source not in ("github", "gitea", "gitlab"):
        raise ValueError(f"not a forge source: {source!r}")
    kind = cast(EventKind, event)
    action = _str(payload.get("action"))
    if source == "gitea" and action is not None:
        action = _GITEA_ACTIONS.get(action, action)
    facts = _FACTS[kind](payload)
    if kind == "push" and _ref_deleted(payload):
        action = REF_DELETED  # GitHub's push has no action; this one fires no `on: push`
    if action == "labeled":
        facts["added_label"] = _str(_dig(payload, "label", "name"))
    return Event(
        kind=kind,
        action=action,
        source=cast(EventSource, source),
        dedup_key=dedup_key(source, delivery),
        forge_repo=forge_repo(payload),
        payload=dict(payload),
        author=_str(_dig(payload, "sender", "login")),
        **facts,
    )


def _issues(payload: Mapping[str, Any]) -> dict[str, Any]:
    issue = _obj(payload.get("issue"))
    return {"labels": _label_names(issue.get("labels")), "text": _title_and_body(issue)}


def _issue_comment(payload: Mapping[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "labels": _label_names(_dig(payload, "issue", "labels")),
        "text": _str(_dig(payload, "comment", "body")),
    }
    # GitHub sends no branches with a comment on a PR; a mapped GitLab note on
    # a merge request carries the MR as a top-level ``pull_request``.
    pr = _obj(payload.get("pull_request"))
    if pr:
        facts["branch"] = _str(_dig(pr, "base", "ref"))
        facts["head_branch"] = _str(_dig(pr, "head", "ref"))
        facts["sha"] = _sha(_dig(pr, "head", "sha"))
    return facts


def _pull_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    pr = _obj(payload.get("pull_request"))
    return {
        "branch": _str(_dig(pr, "base", "ref")),
        "head_branch": _str(_dig(pr, "head", "ref")),
        "sha": _sha(_dig(pr, "head", "sha")),
        "before": _sha(payload.get("before")),
        "labels": _label_names(pr.get("labels")),
        "text": _title_and_body(pr),
    }


def _ref_deleted(payload: Mapping[str, Any]) -> bool:
    """Whether a push deleted its branch or tag: ``deleted: true`` (GitHub, Gitea/Forgejo, a
    mapped GitLab push), or a new tip of all zeros (what every forge sends for it)."""
    after = _str(payload.get("after"))
    zero_tip = after is not None and _ZERO_SHA.fullmatch(after) is not None
    return payload.get("deleted") is True or zero_tip


def _push(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "branch": _branch_of_ref(payload.get("ref")),
        "sha": _sha(payload.get("after")),
        "before": _sha(payload.get("before")),
        "paths": _paths(payload.get("commits")),
    }


def _workflow_run(payload: Mapping[str, Any]) -> dict[str, Any]:
    run = _obj(payload.get("workflow_run"))
    return {
        "branch": _str(run.get("head_branch")),
        "sha": _sha(run.get("head_sha")),
        # GitHub's example sends an empty run name; the workflow's name is there.
        "workflow": _str(run.get("name")) or _str(_dig(payload, "workflow", "name")),
        "conclusion": _str(run.get("conclusion")),
    }


def _check_run(payload: Mapping[str, Any]) -> dict[str, Any]:
    check = _obj(payload.get("check_run"))
    return {
        "branch": _str(_dig(check, "check_suite", "head_branch")),
        "sha": _sha(check.get("head_sha")),
        "workflow": _str(check.get("name")),
        "conclusion": _str(check.get("conclusion")),
    }


_FACTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "issues": _issues,
    "issue_comment": _issue_comment,
    "pull_request": _pull_request,
    "push": _push,
    "workflow_run": _workflow_run,
    "check_run": _check_run,
}
