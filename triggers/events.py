"""The normalized event: what every trigger source produces.

Sources (forge webhooks, local refs, file changes, schedules, the issue inbox,
``POST /events``) turn what happened into an :class:`Event` and hand it to one
callback (:data:`Emit`). They never touch the store, the runner or the API.

``payload`` is what trigger templates see as ``event.*``. It is GitHub-shaped
whatever the source (a GitLab merge request becomes ``pull_request`` with
``pull_request.head.ref``...), so one trigger file works with either forge and
with no forge at all. The other fields are the facts the trigger filters use,
extracted once by the source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventKind = Literal[
    "issues",
    "issue_comment",
    "pull_request",
    "push",
    "workflow_run",
    "check_run",
    "schedule",
    "file_change",
    "manual",
]
KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]

EventSource = Literal["github", "gitlab", "gitea", "local", "api"]
SOURCES: tuple[str, ...] = EventSource.__args__  # type: ignore[attr-defined]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: EventKind
    action: str | None = None  # opened, labeled, synchronize, completed, created ...
    # (push: none, or REF_DELETED for a push that deleted its ref)
    source: EventSource
    dedup_key: str = Field(min_length=1, max_length=300)  # same key, never a second job
    repo: str | None = None  # registered repo name, when the source knows it (local, api)
    forge_repo: str | None = None  # "owner/name" from a forge payload, for routing
    payload: dict[str, Any] = Field(default_factory=dict)

    # Facts for filters (None: the source does not know).
    branch: str | None = None  # push: pushed branch; pull_request: base branch; runs: head branch
    head_branch: str | None = None  # pull_request: the PR's own branch
    sha: str | None = None  # the commit the event is about (checks run at it)
    before: str | None = None  # push/synchronize: previous tip
    paths: list[str] | None = None  # changed paths (push, pull_request, file_change)
    labels: list[str] = Field(default_factory=list)  # labels of the issue / PR
    added_label: str | None = None  # the label a `labeled` action added
    author: str | None = None  # who caused it (forge login, or "local")
    text: str | None = None  # comment or issue body, for `contains`
    workflow: str | None = None  # workflow_run / check_run / pipeline name
    conclusion: str | None = None  # workflow_run / check_run conclusion
    schedule: str | None = None  # schedule: the cron expression that fired


REF_DELETED: str = "deleted"
"""The action of a forge ``push`` that deleted its branch or tag (``deleted: true``, ``after``
all zeros, no commits). No ``on: push`` trigger matches it, just as the local ref source
makes no event for a deleted branch: there is no new commit to work on."""

Emit = Callable[[Event], object]
"""The one callback every source emits through (the dispatcher's ingest path)."""
