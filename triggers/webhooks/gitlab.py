"""GitLab webhooks, mapped to the GitHub shape.

One trigger file serves both forges: a GitLab merge request becomes a
``pull_request`` event whose payload has ``pull_request.head.ref``, a pipeline
becomes a ``workflow_run``, and so on. The original delivery is kept under
``payload["gitlab"]``. Once mapped, the filter facts come from the same code
that reads GitHub payloads (:func:`triggers.webhooks.github.normalize`).

=============================  ==================  =====================================
``X-Gitlab-Event``             kind                action
=============================  ==================  =====================================
Issue Hook (and Confidential)  ``issues``          opened, closed, reopened, edited,
                                                   labeled (an update that added labels)
Note Hook (and Confidential)   ``issue_comment``   created, edited (issue and MR notes)
Merge Request Hook             ``pull_request``    opened, closed (merged too), reopened,
                                                   synchronize (new commits), labeled,
                                                   edited
Push Hook, Tag Push Hook       ``push``            none; ``deleted`` when ``after`` is
                                                   all zeros (a deleted branch or tag)
Pipeline Hook                  ``workflow_run``    completed, in_progress
=============================  ==================  =====================================

Anything else, notes on commits and snippets, and system notes ("added label
X") are ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from triggers.events import Event
from triggers.webhooks import github
from triggers.webhooks.github import _dig, _int, _list, _obj, _str, header

_ISSUE_ACTIONS = {"open": "opened", "close": "closed", "reopen": "reopened", "update": "edited"}
_MR_ACTIONS = {"open": "opened", "close": "closed", "reopen": "reopened", "merge": "closed"}
_NOTE_ACTIONS = {"create": "created", "update": "edited"}
_STATES = {"opened": "open", "closed": "closed", "merged": "closed", "locked": "closed"}
_CONCLUSIONS = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "skipped": "skipped",
}

Shaped = tuple[str, dict[str, Any]]  # (GitHub event kind, GitHub-shaped payload)


# --- headers ---------------------------------------------------------------


def verify(headers: Mapping[str, str], secret: str) -> bool:
    """Whether ``X-Gitlab-Token`` equals ``secret`` (constant-time; empty secret: never)."""
    token = header(headers, "X-Gitlab-Token")
    if not secret or token is None:
        return False
    return hmac.compare_digest(
        token.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """An id for this delivery, or ``None`` (the route then hashes the body).

    ``Idempotency-Key`` (GitLab 17.4+) stays the same when a delivery is
    resent, so it comes first. ``X-Gitlab-Event-UUID`` (16.x) is unique per
    event. ``X-Gitlab-Webhook-UUID`` is deliberately not used: it names the
    webhook, not the delivery, so every delivery of a hook would share it.
    """
    for name in ("Idempotency-Key", "X-Gitlab-Event-UUID"):
        value = header(headers, name)
        if value is not None and value.strip():
            return value.strip()
    return None


def event_name(headers: Mapping[str, str]) -> str | None:
    """The hook name, e.g. ``Issue Hook``."""
    value = header(headers, "X-Gitlab-Event")
    return value.strip() if value is not None and value.strip() else None


def forge_repo(payload: Mapping[str, Any]) -> str | None:
    """``group/sub/name`` of the project the delivery is about (for routing)."""
    return _str(_dig(payload, "project", "path_with_namespace")) or None


# --- normalize -------------------------------------------------------------


def normalize(event: str, delivery: str, payload: Mapping[str, Any]) -> Event | None:
    """The GitHub-shaped :class:`Event` for a GitLab delivery, or ``None`` to ignore it."""
    body: object = payload  # untrusted: the route may hand over any JSON value
    mapper = _MAPPERS.get(event)
    if mapper is None or not isinstance(body, Mapping):
        return None
    shaped = mapper(body)
    if shaped is None:
        return None
    kind, mapped = shaped
    mapped["gitlab"] = dict(body)
    normalized = github.normalize(kind, delivery, mapped, source="gitlab")
    if normalized is not None and kind == "push" and _commits_truncated(body):
        # GitLab lists at most 20 commits; paths from some of them would make
        # `paths:` filters miss files, so the paths are unknown instead.
        normalized = normalized.model_copy(update={"paths": None})
    return normalized


def _commits_truncated(payload: Mapping[str, Any]) -> bool:
    total = _int(payload.get("total_commits_count"))
    return total is not None and total > len(_list(payload.get("commits")))


# --- pieces of the GitHub shape ----------------------------------------------


def _repository(payload: Mapping[str, Any]) -> dict[str, Any]:
    project = _obj(payload.get("project"))
    return {
        "full_name": _str(project.get("path_with_namespace")),
        "name": _str(project.get("name")),
        "html_url": _str(project.get("web_url")),
        "default_branch": _str(project.get("default_branch")),
        "clone_url": _str(project.get("git_http_url")),
        "ssh_url": _str(project.get("git_ssh_url")),
    }


def _sender(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"login": _str(_dig(payload, "user", "username"))}


def _labels(*candidates: object) -> list[dict[str, Any]]:
    """``[{"name": title}]`` from the first candidate that is a list of labels."""
    for labels in candidates:
        if isinstance(labels, list):
            titles = [_str(_obj(label).get("title")) for label in labels]
            return [{"name": t} for t in dict.fromkeys(t for t in titles if t)]
    return []


def _added_labels(payload: Mapping[str, Any]) -> list[str]:
    """Titles of the labels an update added (``changes.labels``), in order."""
    change = _obj(_dig(payload, "changes", "labels"))
    before = {_str(_obj(label).get("title")) for label in _list(change.get("previous"))}
    added: list[str] = []
    for label in _list(change.get("current")):
        title = _str(_obj(label).get("title"))
        if title and title not in before and title not in added:
            added.append(title)
    return added


def _state(value: object) -> str | None:
    state = _str(value)
    return _STATES.get(state, state) if state is not None else None


def _author(item: Mapping[str, Any], payload: Mapping[str, Any], action: str | None) -> object:
    """The item's author, when known: the actor opened it, or the ids match.

    GitLab's ``user`` is whoever caused the event, and the item only has the
    author's numeric id; GitHub's ``issue.user`` is the author.
    """
    user = _obj(payload.get("user"))
    author_id = _int(item.get("author_id"))
    if action == "open" or (author_id is not None and author_id == _int(user.get("id"))):
        return {"login": _str(user.get("username"))}
    return None


def _pull_request(attrs: Mapping[str, Any], labels: list[dict[str, Any]]) -> dict[str, Any]:
    """A GitHub ``pull_request`` from a merge request's attributes."""
    state = _str(attrs.get("state"))
    return {
        "number": _int(attrs.get("iid")),
        "id": _int(attrs.get("id")),
        "title": _str(attrs.get("title")),
        "body": _str(attrs.get("description")),
        "state": _state(state),
        "merged": state == "merged",
        "draft": attrs.get("draft") is True or attrs.get("work_in_progress") is True,
        "html_url": _str(attrs.get("url")),
        "head": {
            "ref": _str(attrs.get("source_branch")),
            "sha": _str(_dig(attrs, "last_commit", "id")),
            "repo": {"full_name": _str(_dig(attrs, "source", "path_with_namespace"))},
        },
        "base": {
            "ref": _str(attrs.get("target_branch")),
            "repo": {"full_name": _str(_dig(attrs, "target", "path_with_namespace"))},
        },
        "labels": labels,
    }


# --- one mapper per hook -------------------------------------------------------


def _issue_hook(payload: Mapping[str, Any]) -> Shaped | None:
    attrs = _obj(payload.get("object_attributes"))
    raw = _str(attrs.get("action"))
    action = _ISSUE_ACTIONS.get(raw, raw) if raw is not None else None
    added = _added_labels(payload) if raw == "update" else []
    if added:
        action = "labeled"
    issue: dict[str, Any] = {
        "number": _int(attrs.get("iid")),
        "id": _int(attrs.get("id")),
        "title": _str(attrs.get("title")),
        "body": _str(attrs.get("description")),
        "labels": _labels(attrs.get("labels"), payload.get("labels")),
        "user": _author(attrs, payload, raw),
        "html_url": _str(attrs.get("url")),
        "state": _state(attrs.get("state")),
    }
    shaped: dict[str, Any] = {
        "action": action,
        "issue": issue,
        "repository": _repository(payload),
        "sender": _sender(payload),
    }
    if added:
        shaped["label"] = {"name": added[0]}
    return "issues", shaped


def _note_hook(payload: Mapping[str, Any]) -> Shaped | None:
    attrs = _obj(payload.get("object_attributes"))
    if attrs.get("system") is True:
        return None  # "added label X", "changed the description": not a comment
    raw = _str(attrs.get("action"))
    url = _str(attrs.get("url"))
    shaped: dict[str, Any] = {
        "action": _NOTE_ACTIONS.get(raw, raw) if raw is not None else "created",
        "comment": {
            "id": _int(attrs.get("id")),
            "body": _str(attrs.get("note")),
            "user": _sender(payload),
            "html_url": url,
        },
        "repository": _repository(payload),
        "sender": _sender(payload),
    }
    item_url = url.split("#", 1)[0] if url else None
    noteable = _str(attrs.get("noteable_type"))
    if noteable == "Issue":
        item = _obj(payload.get("issue"))
        shaped["issue"] = {
            "number": _int(item.get("iid")),
            "id": _int(item.get("id")),
            "title": _str(item.get("title")),
            "body": _str(item.get("description")),
            "labels": _labels(item.get("labels")),
            "html_url": _str(item.get("url")) or item_url,
            "state": _state(item.get("state")),
        }
    elif noteable == "MergeRequest":
        item = _obj(payload.get("merge_request"))
        pr = _pull_request(item, _labels(item.get("labels")))
        pr["html_url"] = pr["html_url"] or item_url
        # GitHub marks a comment on a PR by `issue.pull_request`.
        shaped["issue"] = {
            "number": pr["number"],
            "title": pr["title"],
            "body": pr["body"],
            "labels": pr["labels"],
            "html_url": pr["html_url"],
            "state": pr["state"],
            "pull_request": {"html_url": pr["html_url"]},
        }
        shaped["pull_request"] = pr
    else:
        return None  # comments on commits and snippets
    return "issue_comment", shaped


def _merge_request_hook(payload: Mapping[str, Any]) -> Shaped | None:
    attrs = _obj(payload.get("object_attributes"))
    raw = _str(attrs.get("action"))
    oldrev = _str(attrs.get("oldrev"))
    added: list[str] = []
    if raw == "update":
        added = [] if oldrev else _added_labels(payload)
        action: str | None = "synchronize" if oldrev else ("labeled" if added else "edited")
    else:
        action = _MR_ACTIONS.get(raw, raw) if raw is not None else None
    pr = _pull_request(attrs, _labels(attrs.get("labels"), payload.get("labels")))
    pr["user"] = _author(attrs, payload, raw)
    if raw == "merge":
        pr["merged"] = True
    shaped: dict[str, Any] = {
        "action": action,
        "number": pr["number"],
        "pull_request": pr,
        "repository": _repository(payload),
        "sender": _sender(payload),
    }
    if action == "synchronize":
        shaped["before"] = oldrev
        shaped["after"] = pr["head"]["sha"]
    if added:
        shaped["label"] = {"name": added[0]}
    return "pull_request", shaped


def _zero(sha: str | None) -> bool:
    return sha is not None and sha != "" and set(sha) == {"0"}


def _push_hook(payload: Mapping[str, Any]) -> Shaped | None:
    before = _str(payload.get("before"))
    after = _str(payload.get("after"))
    commits: list[dict[str, Any]] = []
    for entry in _list(payload.get("commits")):
        commit = _obj(entry)
        mapped: dict[str, Any] = {
            "id": _str(commit.get("id")),
            "message": _str(commit.get("message")),
            "timestamp": _str(commit.get("timestamp")),
            "url": _str(commit.get("url")),
            "author": {
                "name": _str(_dig(commit, "author", "name")),
                "email": _str(_dig(commit, "author", "email")),
            },
        }
        for key in ("added", "modified", "removed"):
            files = commit.get(key)
            if isinstance(files, list):  # a list of the wrong type stays absent
                mapped[key] = [f for f in files if isinstance(f, str)]
        commits.append(mapped)
    head = next((c for c in commits if after and c["id"] == after), None)
    shaped: dict[str, Any] = {
        "ref": _str(payload.get("ref")),
        "before": before,
        "after": after,
        "created": _zero(before),
        "deleted": _zero(after),
        "commits": commits,
        "head_commit": head,
        "repository": _repository(payload),
        "pusher": {
            "name": _str(payload.get("user_name")),
            "email": _str(payload.get("user_email")),
        },
        "sender": {"login": _str(payload.get("user_username"))},
    }
    return "push", shaped


def _pipeline_hook(payload: Mapping[str, Any]) -> Shaped | None:
    attrs = _obj(payload.get("object_attributes"))
    status = _str(attrs.get("status"))
    completed = status in _CONCLUSIONS
    action = "completed" if completed else "in_progress"
    name = _str(attrs.get("name")) or "pipeline"
    mr = _obj(payload.get("merge_request"))
    ref = _str(attrs.get("ref"))
    if mr and ref and ref.startswith("refs/merge-requests/"):
        ref = _str(mr.get("source_branch"))  # a merge-request pipeline's head branch
    pull_requests = []
    if mr:
        pull_requests.append(
            {
                "number": _int(mr.get("iid")),
                "head": {"ref": _str(mr.get("source_branch"))},
                "base": {"ref": _str(mr.get("target_branch"))},
                "html_url": _str(mr.get("url")),
            }
        )
    run = {
        "id": _int(attrs.get("id")),
        "name": name,
        "head_branch": ref,
        "head_sha": _str(attrs.get("sha")),
        "status": action,
        "conclusion": _CONCLUSIONS[status] if completed and status else None,
        "event": _str(attrs.get("source")),
        "html_url": _str(attrs.get("url")),
        "pull_requests": pull_requests,
    }
    shaped: dict[str, Any] = {
        "action": action,
        "workflow_run": run,
        "workflow": {"name": name},
        "repository": _repository(payload),
        "sender": _sender(payload),
    }
    return "workflow_run", shaped


_MAPPERS: dict[str, Callable[[Mapping[str, Any]], Shaped | None]] = {
    "Issue Hook": _issue_hook,
    "Confidential Issue Hook": _issue_hook,
    "Note Hook": _note_hook,
    "Confidential Note Hook": _note_hook,
    "Merge Request Hook": _merge_request_hook,
    "Push Hook": _push_hook,
    "Tag Push Hook": _push_hook,
    "Pipeline Hook": _pipeline_hook,
}
