"""``${{ name.path }}`` templates: substitution, never evaluation.

A template is text with placeholders such as ``${{ event.issue.number }}`` or
``${{ check.output_tail }}``. A placeholder holds one dotted *name*: a root
(``event``, ``check``, ``trigger``, ``repo``) followed by ``.segment``\\ s made of
letters, digits, ``_`` and ``-``; a numeric segment indexes a list
(``event.commits.0.id``). Anything else between ``${{`` and ``}}`` (operators,
calls, quotes, filters) is an error: there is no ``eval``, no ``str.format``
and no Jinja, so event text (issue titles, comments) can never run as code.

Rendering is one left-to-right pass: each value is inserted once and never
looked at again, so a value that itself contains ``${{ x }}`` stays literal.
A name with no value raises :class:`TemplateError`; it never becomes an empty
string. ``$${{`` writes a literal ``${{``.

Pure: standard library and :mod:`dispatcher.errors` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dispatcher.errors import InvalidInput

ROOTS: Final = ("event", "check", "trigger", "repo")
"""The names a template can start with, in documentation order."""

CHECK_KEYS: Final = frozenset({"output_tail", "exit_code", "command"})
TRIGGER_KEYS: Final = frozenset({"name"})
REPO_KEYS: Final = frozenset({"name", "path", "default_branch"})
_FIXED_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "check": CHECK_KEYS,
    "trigger": TRIGGER_KEYS,
    "repo": REPO_KEYS,
}

EVENT_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "issues": frozenset(
        {"action", "issue", "label", "repository", "sender", "changes", "assignee"}
    ),
    "issue_comment": frozenset({"action", "issue", "comment", "repository", "sender"}),
    "pull_request": frozenset(
        {"action", "number", "pull_request", "repository", "sender", "before", "after", "label"}
    ),
    "push": frozenset(
        {
            "ref",
            "before",
            "after",
            "created",
            "deleted",
            "forced",
            "commits",
            "head_commit",
            "compare",
            "pusher",
            "repository",
            "sender",
            "base_ref",
        }
    ),
    "workflow_run": frozenset({"action", "workflow_run", "workflow", "repository", "sender"}),
    "check_run": frozenset({"action", "check_run", "repository", "sender"}),
    "schedule": frozenset({"schedule", "fired_at", "repository"}),
    "file_change": frozenset({"paths", "repository"}),
    "manual": frozenset({"inputs", "repository", "sender"}),
}
"""Top-level keys of ``event.*`` per event kind (GitHub's payloads; local sources match)."""

_SEGMENT: Final = r"[A-Za-z0-9_-]+"
_NAME_RE: Final = re.compile(rf"\s*({_SEGMENT}(?:\.{_SEGMENT})*)\s*")
# `$${{` (escape), `${{ body }}` (placeholder), or a `${{` that is never closed.
_TOKEN_RE: Final = re.compile(r"\$\$\{\{|\$\{\{(?P<body>.*?)\}\}|\$\{\{", re.DOTALL)
_MISSING: Final = object()


class TemplateError(InvalidInput):
    """A template that cannot be rendered: bad syntax or a name with no value."""


@dataclass(frozen=True)
class _Piece:
    text: str  # literal text, or the placeholder as written
    name: str | None = None  # the dotted name, for a placeholder


def _placeholder(name: str) -> str:
    return f"`${{{{ {name} }}}}`"


def _pieces(template: str) -> Iterator[_Piece]:
    """Split ``template`` into literal text and placeholders; raise on bad syntax."""
    pos = 0
    for match in _TOKEN_RE.finditer(template):
        if match.start() > pos:
            yield _Piece(template[pos : match.start()])
        token = match.group(0)
        pos = match.end()
        if token == "$${{":  # noqa: S105 (an escape, not a password)
            yield _Piece("${{")
            continue
        body = match.group("body")
        if body is None:
            raise TemplateError("template: unterminated `${{` (close it with `}}`)")
        name = _NAME_RE.fullmatch(body)
        if name is None:
            raise TemplateError(
                f"template: `{token}`: not a name; templates substitute values such as "
                "`${{ event.issue.number }}` and never evaluate expressions"
            )
        yield _Piece(token, name.group(1))
    if pos < len(template):
        yield _Piece(template[pos:])


def names(template: str) -> list[str]:
    """The dotted names of every placeholder, in order (repeats kept)."""
    return [piece.name for piece in _pieces(template) if piece.name is not None]


def lookup(context: Mapping[str, Any], name: str) -> Any:
    """The value at dotted ``name``; raise :class:`TemplateError` if there is none."""
    value: Any = context
    for segment in name.split("."):
        value = _step(value, segment)
        if value is _MISSING:
            raise TemplateError(f"template: {_placeholder(name)}: no such value")
    return value


def _step(value: Any, segment: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(segment, _MISSING)
    is_list = isinstance(value, Sequence) and not isinstance(value, str | bytes)
    if is_list and segment.isdigit() and int(segment) < len(value):
        return value[int(segment)]
    return _MISSING


def to_text(value: Any) -> str:
    """How a value is written into the text: str as-is, None empty, the rest JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float | Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Replace every placeholder by its value; one pass, values never re-scanned."""
    out: list[str] = []
    for piece in _pieces(template):
        out.append(piece.text if piece.name is None else to_text(lookup(context, piece.name)))
    return "".join(out)


def check_template(template: str, *, kinds: set[str], has_check: bool) -> list[str]:
    """Problems with ``template`` for a trigger on ``kinds`` (empty: none found).

    Checks syntax, roots, the keys of ``check``/``trigger``/``repo``, that
    ``check.*`` is used only with ``check:``, and that ``event.<key>`` is a
    top-level key of at least one of the kinds. Deeper ``event`` paths depend on
    the payload and are checked when the template is rendered.
    """
    try:
        found = names(template)
    except TemplateError as exc:
        return [exc.message.removeprefix("template: ")]
    problems: list[str] = []
    for name in dict.fromkeys(found):  # each distinct name once, in order
        problem = _check_name(name, kinds=kinds, has_check=has_check)
        if problem is not None:
            problems.append(f"{_placeholder(name)}: {problem}")
    return problems


def _check_name(name: str, *, kinds: set[str], has_check: bool) -> str | None:
    root, *rest = name.split(".")
    if root not in ROOTS:
        return f"unknown name '{root}' (use {', '.join(ROOTS)})"
    if root == "check" and not has_check:
        return "check.* is only available in a trigger with `check:`"
    if root == "event":
        if not rest or not kinds:
            return None
        allowed = frozenset().union(*(EVENT_KEYS.get(kind, frozenset()) for kind in kinds))
        if rest[0] not in allowed:
            return (
                f"'{rest[0]}' is not in the payload of {', '.join(sorted(kinds))} "
                f"(its keys: {', '.join(sorted(allowed))})"
            )
        return None
    keys = _FIXED_KEYS[root]
    if rest and rest[0] not in keys:
        return f"unknown key '{rest[0]}' in {root} (use {', '.join(sorted(keys))})"
    if len(rest) > 1:
        return f"{root}.{rest[0]} has no keys"
    return None
