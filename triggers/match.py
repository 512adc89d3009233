"""Does an event fire a trigger? Pure functions over :class:`Event` and :class:`Trigger`.

:func:`matches` answers ``None`` for a match, else a short reason the daemon
logs ("branch 'dev' not in branches"). The filters follow GitHub Actions:
branch and path globs where ``*`` stops at ``/`` and ``**`` crosses it,
``types`` as activity types (``pull_request`` defaults to opened, synchronize,
reopened), and, for ``labeled``, the label just added must be one of
``labels`` so that adding an unrelated label to an already-labeled issue does
not fire again. Names (labels, authors) compare case-insensitively. A ``push``
that deleted its branch or tag (action ``deleted``) never matches: there is no
new commit to work on (the local ref source makes no event for it at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from wcmatch import glob

from triggers.config import (
    CheckRunFilter,
    FileChangeFilter,
    IssueCommentFilter,
    IssuesFilter,
    PullRequestFilter,
    PushFilter,
    Trigger,
    TriggerFile,
    WorkflowRunFilter,
)
from triggers.events import REF_DELETED, Event

_GLOB_FLAGS: Final = glob.GLOBSTAR | glob.DOTGLOB | glob.FORCEUNIX

AnyFilter = (
    IssuesFilter
    | IssueCommentFilter
    | PullRequestFilter
    | PushFilter
    | WorkflowRunFilter
    | CheckRunFilter
    | FileChangeFilter
)


DELETED_REF_REASON: Final = "the push deleted its ref: on: push fires only for new commits"


def matching(file: TriggerFile, event: Event) -> list[Trigger]:
    """The triggers of ``file`` that ``event`` fires, in file order."""
    return [trigger for trigger in file.trigger_list() if matches(trigger, event) is None]


def matches(trigger: Trigger, event: Event) -> str | None:
    """None if ``event`` fires ``trigger``, else why not."""
    kinds = trigger.kinds()
    if event.kind not in kinds:
        return f"kind '{event.kind}' not in on ({', '.join(sorted(kinds))})"
    if event.kind == "push" and event.action == REF_DELETED:
        return DELETED_REF_REASON
    if event.kind == "schedule":
        return _schedule(trigger, event)
    if event.kind == "manual":
        return None
    spec: AnyFilter | None = getattr(trigger.on, event.kind)
    assert spec is not None
    return _filters(spec, event)


def _schedule(trigger: Trigger, event: Event) -> str | None:
    fired = " ".join((event.schedule or "").split())
    if fired in trigger.crons():
        return None
    return f"schedule '{event.schedule}' is not one of this trigger's crons"


def _filters(spec: AnyFilter, event: Event) -> str | None:
    """The first filter of ``spec`` that rejects ``event`` (filters a kind lacks pass)."""
    checks = (
        _types(getattr(spec, "types", None), event),
        _branches(getattr(spec, "branches", None), getattr(spec, "branches_ignore", None), event),
        _paths(getattr(spec, "paths", None), getattr(spec, "paths_ignore", None), event),
        _labels(getattr(spec, "labels", None), event),
        _contains(getattr(spec, "contains", None), event),
        _one_of("author", event.author, getattr(spec, "authors", None), "authors", fold=True),
        _one_of("workflow", event.workflow, getattr(spec, "workflows", None), "workflows"),
        _one_of("check", event.workflow, getattr(spec, "names", None), "names"),
        _one_of("conclusion", event.conclusion, getattr(spec, "conclusions", None), "conclusions"),
    )
    return next((reason for reason in checks if reason is not None), None)


def _types(types: list[str] | None, event: Event) -> str | None:
    if types is None or event.action in types:
        return None
    return f"action '{event.action}' not in types"


def _glob(value: str, patterns: Sequence[str]) -> bool:
    return bool(glob.globmatch(value, list(patterns), flags=_GLOB_FLAGS))


def _branches(only: list[str] | None, ignore: list[str] | None, event: Event) -> str | None:
    if only is not None:
        if event.branch is None:
            return "no branch to match branches"
        if not _glob(event.branch, only):
            return f"branch '{event.branch}' not in branches"
    if ignore is not None and event.branch is not None and _glob(event.branch, ignore):
        return f"branch '{event.branch}' in branches-ignore"
    return None


def _paths(only: list[str] | None, ignore: list[str] | None, event: Event) -> str | None:
    """At least one changed path is not ignored and (with ``paths``) matches ``paths``."""
    if only is None and ignore is None:
        return None
    if event.paths is None:  # the source does not know: `paths` cannot match, ignore passes
        return "no changed paths to match paths" if only is not None else None
    kept = [path for path in event.paths if not (ignore and _glob(path, ignore))]
    if ignore is not None and event.paths and not kept:
        return "every changed path is in paths-ignore"
    if only is not None and not any(_glob(path, only) for path in kept):
        return "no changed path matches paths"
    return None


def _labels(labels: list[str] | None, event: Event) -> str | None:
    if labels is None:
        return None
    wanted = _folded(labels)
    if event.action == "labeled":
        if event.added_label is None:
            return "labeled event without the added label"
        if event.added_label.casefold() not in wanted:
            return f"added label '{event.added_label}' not in labels"
        return None
    if wanted.isdisjoint(_folded(event.labels)):
        return "no label in labels"
    return None


def _contains(needles: list[str] | None, event: Event) -> str | None:
    if needles is None:
        return None
    text = (event.text or "").casefold()
    if any(needle.casefold() in text for needle in needles):
        return None
    return "text contains nothing in contains"


def _one_of(
    what: str, value: str | None, allowed: list[str] | None, key: str, *, fold: bool = False
) -> str | None:
    if allowed is None:
        return None
    if value is not None:
        if fold and value.casefold() in _folded(allowed):
            return None
        if not fold and value in allowed:
            return None
    return f"{what} '{value}' not in {key}"


def _folded(values: Iterable[str]) -> set[str]:
    return {value.casefold() for value in values}
