"""Templates substitute values; they never evaluate anything."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.errors import InvalidInput
from triggers.events import KINDS
from triggers.template import EVENT_KEYS, TemplateError, check_template, names, render

CTX: dict[str, Any] = {
    "event": {
        "action": "opened",
        "issue": {"number": 7, "title": "Crash on start", "labels": [{"name": "bug"}]},
        "commits": [{"id": "abc123"}, {"id": "def456"}],
        "draft": False,
        "score": 1.5,
        "milestone": None,
        "inject": "${{ event.issue.title }}",
        "code": "__import__('os').system('touch pwned')",
    },
    "check": {"output_tail": "FAILED test_x", "exit_code": 1, "command": "pytest -x -q"},
    "trigger": {"name": "fix"},
    "repo": {"name": "demo", "path": "/src/demo", "default_branch": "main"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("no placeholders", "no placeholders"),
        ("#${{ event.issue.number }}", "#7"),
        ("${{event.issue.number}}", "7"),  # spaces are optional
        ("${{   event.issue.title   }}!", "Crash on start!"),
        ("${{ event.commits.1.id }}", "def456"),  # numeric segments index lists
        ("${{ event.draft }}", "false"),
        ("${{ event.score }}", "1.5"),
        ("[${{ event.milestone }}]", "[]"),  # None renders empty
        ("${{ event.issue.labels }}", '[{"name":"bug"}]'),  # compact JSON
        ("${{ event.commits.0 }}", '{"id":"abc123"}'),
        ("${{ check.exit_code }}: ${{ check.output_tail }}", "1: FAILED test_x"),
        ("${{ trigger.name }}@${{ repo.name }}:${{ repo.default_branch }}", "fix@demo:main"),
        ("a ${{ event.issue.number }} b ${{ event.issue.number }}", "a 7 b 7"),
        ("}} and {{ stay", "}} and {{ stay"),
        ("cost: $5 {x}", "cost: $5 {x}"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


def test_values_are_inserted_once_and_never_rescanned() -> None:
    assert render("${{ event.inject }}", CTX) == "${{ event.issue.title }}"
    assert render("${{ event.code }}", CTX) == "__import__('os').system('touch pwned')"


def test_values_are_inserted_verbatim_without_any_escaping() -> None:
    ctx = {"event": {"t": "a \"quoted\" `tick` $(rm -rf /) 'x' \\ <b>"}}
    assert render("${{ event.t }}", ctx) == ctx["event"]["t"]


def test_double_dollar_escapes_a_literal_placeholder() -> None:
    assert render("$${{ event.issue.number }} is ${{ event.issue.number }}", CTX) == (
        "${{ event.issue.number }} is 7"
    )
    assert names("$${{ not checked }}") == []


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("${{ event.issue.nmber }}", "event.issue.nmber"),
        ("${{ event.commits.2.id }}", "event.commits.2.id"),  # index out of range
        ("${{ event.issue.title.0 }}", "event.issue.title.0"),  # strings are not indexed
        ("${{ event.issue.number.x }}", "event.issue.number.x"),
        ("${{ nothing }}", "nothing"),
        ("${{ check.output_tail }}", "check.output_tail"),
    ],
)
def test_a_missing_value_is_an_error_never_an_empty_string(template: str, missing: str) -> None:
    ctx = {k: v for k, v in CTX.items() if k != "check"}
    with pytest.raises(TemplateError) as caught:
        render(template, ctx)
    assert caught.value.message == f"template: `${{{{ {missing} }}}}`: no such value"
    assert isinstance(caught.value, InvalidInput)


@pytest.mark.parametrize(
    "template",
    [
        "${{ __import__('os').system('touch pwned') }}",
        "${{ event.issue.number + 1 }}",
        "${{ event['issue'] }}",
        "${{ event.issue.number | upper }}",
        "${{ 'x' }}",
        "${{ }}",
        "${{ event..issue }}",
        "${{ event.issue. }}",
        "${{ f(event) }}",
        "unterminated ${{ event.issue.number",
    ],
)
def test_anything_but_a_name_is_an_error_and_is_never_evaluated(
    template: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TemplateError):
        render(template, CTX)
    with pytest.raises(TemplateError):
        names(template)
    assert check_template(template, kinds={"issues"}, has_check=True)
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_names_in_order() -> None:
    text = "${{ event.issue.number }} ${{check.output_tail}} ${{ event.issue.number }}"
    assert names(text) == ["event.issue.number", "check.output_tail", "event.issue.number"]


@pytest.mark.parametrize(
    ("template", "kinds", "has_check", "problem"),
    [
        ("${{ event.issue.number }}", {"issues"}, False, None),
        ("${{ event.issue.number }}", {"issues", "push"}, False, None),  # any of the kinds
        ("${{ event.commits.0.id }}", {"push"}, False, None),
        ("${{ event }}", {"push"}, False, None),
        ("${{ check.output_tail }}", {"push"}, True, None),
        ("${{ trigger.name }} ${{ repo.path }}", {"manual"}, False, None),
        ("${{ event.anything }}", set(), False, None),  # no kinds known: not checked
        ("${{ foo.bar }}", {"push"}, False, "`${{ foo.bar }}`: unknown name 'foo'"),
        ("${{ env.HOME }}", {"push"}, False, "unknown name 'env'"),
        (
            "${{ check.output_tail }}",
            {"push"},
            False,
            "`${{ check.output_tail }}`: check.* is only available in a trigger with `check:`",
        ),
        ("${{ check.stdout }}", {"push"}, True, "unknown key 'stdout' in check"),
        ("${{ repo.nme }}", {"push"}, False, "unknown key 'nme' in repo"),
        ("${{ trigger.agent }}", {"push"}, False, "unknown key 'agent' in trigger"),
        ("${{ repo.name.x }}", {"push"}, False, "repo.name has no keys"),
        (
            "${{ event.issue.number }}",
            {"push"},
            False,
            "`${{ event.issue.number }}`: 'issue' is not in the payload of push",
        ),
        ("${{ event.comment.body }}", {"issues"}, False, "'comment' is not in the payload"),
        ("${{ event.ref }}", {"schedule"}, False, "'ref' is not in the payload of schedule"),
        ("${{ 1 + 1 }}", {"push"}, False, "`${{ 1 + 1 }}`: not a name"),
    ],
)
def test_check_template(
    template: str, kinds: set[str], has_check: bool, problem: str | None
) -> None:
    problems = check_template(template, kinds=kinds, has_check=has_check)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problem in problems[0]


def test_check_template_reports_each_bad_name_once() -> None:
    text = "${{ foo }} ${{ foo }} ${{ bar }}"
    assert len(check_template(text, kinds={"push"}, has_check=False)) == 2


def test_every_kind_has_its_payload_keys() -> None:
    assert set(EVENT_KEYS) == set(KINDS)
    assert all("repository" in keys for keys in EVENT_KEYS.values())
