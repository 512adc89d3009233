"""Which events fire which triggers: a table per filter."""

from __future__ import annotations

from typing import Any

import pytest

from triggers.config import Trigger, parse
from triggers.events import Event
from triggers.match import matches, matching


def trigger(on: str) -> Trigger:
    return parse(f"version: 1\ntriggers:\n  t:\n    on: {on}\n    prompt: x\n").trigger_list()[0]


def event(kind: str, **facts: Any) -> Event:
    return Event(kind=kind, source="local", dedup_key="k", **facts)


M = None  # matches

CASES: list[tuple[str, str, str, dict[str, Any], str | None]] = [
    # kind
    ("kind matches", "push", "push", {"branch": "main"}, M),
    (
        "a push that deleted its ref",
        "push",
        "push",
        {"action": "deleted", "branch": "main"},
        "the push deleted its ref: on: push fires only for new commits",
    ),
    (
        "a deleted ref, whatever the filters",
        "{push: {branches: [main], paths-ignore: [docs/**]}}",
        "push",
        {"action": "deleted", "branch": "main"},
        "the push deleted its ref: on: push fires only for new commits",
    ),
    ("kind differs", "push", "issues", {"action": "opened"}, "kind 'issues' not in on (push)"),
    ("one of several kinds", "[push, issues]", "issues", {"action": "opened"}, M),
    ("manual", "manual", "manual", {}, M),
    # types
    ("types in", "{issues: {types: [opened]}}", "issues", {"action": "opened"}, M),
    (
        "types out",
        "{issues: {types: [opened]}}",
        "issues",
        {"action": "closed"},
        "action 'closed' not in types",
    ),
    ("no types: any action", "issues", "issues", {"action": "deleted"}, M),
    ("no types: no action", "{issues: }", "issues", {}, M),
    ("pr default types: opened", "pull_request", "pull_request", {"action": "opened"}, M),
    ("pr default types: synchronize", "pull_request", "pull_request", {"action": "synchronize"}, M),
    ("pr default types: reopened", "pull_request", "pull_request", {"action": "reopened"}, M),
    (
        "pr default types: closed",
        "pull_request",
        "pull_request",
        {"action": "closed"},
        "action 'closed' not in types",
    ),
    (
        "pr explicit types",
        "{pull_request: {types: [closed]}}",
        "pull_request",
        {"action": "closed"},
        M,
    ),
    (
        "types and no action",
        "{workflow_run: {types: [completed]}}",
        "workflow_run",
        {},
        "action 'None' not in types",
    ),
    # branches (push: pushed branch; pull_request: base branch; workflow_run: head branch)
    ("branch exact", "{push: {branches: [main]}}", "push", {"branch": "main"}, M),
    (
        "branch not in",
        "{push: {branches: [main]}}",
        "push",
        {"branch": "dev"},
        "branch 'dev' not in branches",
    ),
    ("star", "{push: {branches: ['feature/*']}}", "push", {"branch": "feature/x"}, M),
    (
        "star stops at slash",
        "{push: {branches: ['feature/*']}}",
        "push",
        {"branch": "feature/x/y"},
        "branch 'feature/x/y' not in branches",
    ),
    (
        "globstar crosses slash",
        "{push: {branches: ['feature/**']}}",
        "push",
        {"branch": "feature/x/y"},
        M,
    ),
    (
        "one of several",
        "{push: {branches: [main, 'release/*']}}",
        "push",
        {"branch": "release/1"},
        M,
    ),
    ("question mark", "{push: {branches: ['v?']}}", "push", {"branch": "v2"}, M),
    ("dot branch", "{push: {branches: ['*']}}", "push", {"branch": ".hidden"}, M),
    (
        "no branch never matches branches",
        "{push: {branches: ['**']}}",
        "push",
        {},
        "no branch to match branches",
    ),
    (
        "branches-ignore hit",
        "{push: {branches-ignore: ['dispatcher/**']}}",
        "push",
        {"branch": "dispatcher/1-x"},
        "branch 'dispatcher/1-x' in branches-ignore",
    ),
    ("branches-ignore miss", "{push: {branches-ignore: ['wip/*']}}", "push", {"branch": "main"}, M),
    ("branches-ignore without branch", "{push: {branches-ignore: [main]}}", "push", {}, M),
    (
        "pr matches the base branch",
        "{pull_request: {branches: [main]}}",
        "pull_request",
        {"action": "opened", "branch": "main", "head_branch": "feature"},
        M,
    ),
    (
        "pr head branch is not the base",
        "{pull_request: {branches: [feature]}}",
        "pull_request",
        {"action": "opened", "branch": "main", "head_branch": "feature"},
        "branch 'main' not in branches",
    ),
    (
        "workflow_run head branch",
        "{workflow_run: {branches-ignore: [main]}}",
        "workflow_run",
        {"action": "completed", "branch": "main"},
        "branch 'main' in branches-ignore",
    ),
    # paths
    ("paths any", "{push: {paths: ['src/**']}}", "push", {"paths": ["README.md", "src/a/b.py"]}, M),
    (
        "paths none",
        "{push: {paths: ['src/**']}}",
        "push",
        {"paths": ["README.md"]},
        "no changed path matches paths",
    ),
    (
        "paths unknown",
        "{push: {paths: ['src/**']}}",
        "push",
        {},
        "no changed paths to match paths",
    ),
    (
        "paths empty",
        "{push: {paths: ['**']}}",
        "push",
        {"paths": []},
        "no changed path matches paths",
    ),
    (
        "paths star stops at slash",
        "{push: {paths: ['*.py']}}",
        "push",
        {"paths": ["a/b.py"]},
        "no changed path matches paths",
    ),
    ("paths star top level", "{push: {paths: ['*.py']}}", "push", {"paths": ["b.py"]}, M),
    (
        "paths globstar zero dirs",
        "{push: {paths: ['docs/**/*.md']}}",
        "push",
        {"paths": ["docs/a.md"]},
        M,
    ),
    ("paths dotfile", "{push: {paths: ['**/*.yml']}}", "push", {"paths": [".github/ci.yml"]}, M),
    (
        "paths-ignore all ignored",
        "{push: {paths-ignore: ['docs/**']}}",
        "push",
        {"paths": ["docs/a.md", "docs/b/c.md"]},
        "every changed path is in paths-ignore",
    ),
    (
        "paths-ignore one kept",
        "{push: {paths-ignore: ['docs/**']}}",
        "push",
        {"paths": ["docs/a.md", "x.py"]},
        M,
    ),
    ("paths-ignore unknown paths", "{push: {paths-ignore: ['docs/**']}}", "push", {}, M),
    (
        "pr paths",
        "{pull_request: {paths: ['**/*.py']}}",
        "pull_request",
        {"action": "synchronize", "paths": ["a/b.py"]},
        M,
    ),
    # labels
    (
        "labels any",
        "{issues: {labels: [agent]}}",
        "issues",
        {"action": "opened", "labels": ["bug", "agent"]},
        M,
    ),
    (
        "labels case",
        "{issues: {labels: [Agent]}}",
        "issues",
        {"action": "opened", "labels": ["AGENT"]},
        M,
    ),
    (
        "labels none",
        "{issues: {labels: [agent]}}",
        "issues",
        {"action": "opened", "labels": ["bug"]},
        "no label in labels",
    ),
    (
        "labels empty",
        "{issues: {labels: [agent]}}",
        "issues",
        {"action": "opened"},
        "no label in labels",
    ),
    (
        "labeled: the added label",
        "{issues: {types: [labeled], labels: [agent]}}",
        "issues",
        {"action": "labeled", "added_label": "agent", "labels": ["agent"]},
        M,
    ),
    (
        "labeled: another label on an agent issue does not fire again",
        "{issues: {types: [opened, labeled], labels: [agent]}}",
        "issues",
        {"action": "labeled", "added_label": "bug", "labels": ["agent", "bug"]},
        "added label 'bug' not in labels",
    ),
    (
        "labeled without the added label",
        "{issues: {labels: [agent]}}",
        "issues",
        {"action": "labeled", "labels": ["agent"]},
        "labeled event without the added label",
    ),
    (
        "pr labels",
        "{pull_request: {types: [labeled], labels: [review]}}",
        "pull_request",
        {"action": "labeled", "added_label": "Review"},
        M,
    ),
    (
        "comment labels",
        "{issue_comment: {labels: [agent]}}",
        "issue_comment",
        {"action": "created", "labels": ["agent"]},
        M,
    ),
    # contains
    (
        "contains",
        "{issue_comment: {contains: /agent}}",
        "issue_comment",
        {"action": "created", "text": "please /Agent fix it"},
        M,
    ),
    (
        "contains any",
        "{issue_comment: {contains: [/fix, /agent]}}",
        "issue_comment",
        {"action": "created", "text": "/fix"},
        M,
    ),
    (
        "contains none",
        "{issue_comment: {contains: [/agent]}}",
        "issue_comment",
        {"action": "created", "text": "lgtm"},
        "text contains nothing in contains",
    ),
    (
        "contains no text",
        "{issue_comment: {contains: [/agent]}}",
        "issue_comment",
        {"action": "created"},
        "text contains nothing in contains",
    ),
    # authors
    ("authors", "{push: {authors: [alice]}}", "push", {"author": "Alice"}, M),
    (
        "authors out",
        "{push: {authors: [alice]}}",
        "push",
        {"author": "mallory"},
        "author 'mallory' not in authors",
    ),
    ("authors unknown", "{push: {authors: [alice]}}", "push", {}, "author 'None' not in authors"),
    (
        "comment authors",
        "{issue_comment: {contains: /agent, authors: [alice]}}",
        "issue_comment",
        {"action": "created", "text": "/agent", "author": "mallory"},
        "author 'mallory' not in authors",
    ),
    # workflows, names, conclusions
    (
        "workflows",
        "{workflow_run: {workflows: [CI]}}",
        "workflow_run",
        {"action": "completed", "workflow": "CI"},
        M,
    ),
    (
        "workflows out",
        "{workflow_run: {workflows: [CI]}}",
        "workflow_run",
        {"action": "completed", "workflow": "Deploy"},
        "workflow 'Deploy' not in workflows",
    ),
    (
        "conclusions",
        "{workflow_run: {types: [completed], conclusions: [failure]}}",
        "workflow_run",
        {"action": "completed", "conclusion": "failure"},
        M,
    ),
    (
        "conclusions out",
        "{workflow_run: {conclusions: [failure]}}",
        "workflow_run",
        {"action": "completed", "conclusion": "success"},
        "conclusion 'success' not in conclusions",
    ),
    (
        "check names",
        "{check_run: {names: [lint], conclusions: [failure]}}",
        "check_run",
        {"action": "completed", "workflow": "lint", "conclusion": "failure"},
        M,
    ),
    (
        "check names out",
        "{check_run: {names: [lint]}}",
        "check_run",
        {"action": "completed", "workflow": "test"},
        "check 'test' not in names",
    ),
    # schedule
    (
        "schedule",
        "{schedule: [{cron: '0 3 * * *'}, {cron: '*/5 * * * *'}]}",
        "schedule",
        {"schedule": "*/5 * * * *"},
        M,
    ),
    (
        "schedule spacing",
        "{schedule: [{cron: '0  3 * * *'}]}",
        "schedule",
        {"schedule": "0 3  * * *"},
        M,
    ),
    (
        "schedule of another trigger",
        "{schedule: [{cron: '0 3 * * *'}]}",
        "schedule",
        {"schedule": "0 4 * * *"},
        "schedule '0 4 * * *' is not one of this trigger's crons",
    ),
    # file_change
    (
        "file_change",
        "{file_change: {paths: ['docs/**/*.md']}}",
        "file_change",
        {"paths": ["docs/x/y.md"]},
        M,
    ),
    (
        "file_change other file",
        "{file_change: {paths: ['docs/**/*.md']}}",
        "file_change",
        {"paths": ["src/a.py"]},
        "no changed path matches paths",
    ),
    (
        "file_change ignored",
        "{file_change: {paths: ['docs/**'], paths-ignore: ['docs/_build/**']}}",
        "file_change",
        {"paths": ["docs/_build/index.html"]},
        "every changed path is in paths-ignore",
    ),
    (
        "file_change: the only match is ignored",
        "{file_change: {paths: ['docs/**'], paths-ignore: ['docs/_build/**']}}",
        "file_change",
        {"paths": ["docs/_build/index.html", "src/a.py"]},
        "no changed path matches paths",
    ),
    (
        "file_change: one match kept",
        "{file_change: {paths: ['docs/**'], paths-ignore: ['docs/_build/**']}}",
        "file_change",
        {"paths": ["docs/_build/index.html", "docs/a.md"]},
        M,
    ),
    (
        "file_change without paths",
        "{file_change: {paths: ['**']}}",
        "file_change",
        {},
        "no changed paths to match paths",
    ),
    # several filters: every one must pass
    (
        "all filters pass",
        "{pull_request: {types: [opened], branches: [main], paths: ['src/**'], authors: [bob]}}",
        "pull_request",
        {"action": "opened", "branch": "main", "paths": ["src/x"], "author": "bob"},
        M,
    ),
    (
        "one filter fails",
        "{pull_request: {types: [opened], branches: [main], paths: ['src/**'], authors: [bob]}}",
        "pull_request",
        {"action": "opened", "branch": "main", "paths": ["src/x"], "author": "eve"},
        "author 'eve' not in authors",
    ),
]


@pytest.mark.parametrize(
    ("on", "kind", "facts", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_matches(on: str, kind: str, facts: dict[str, Any], reason: str | None) -> None:
    assert matches(trigger(on), event(kind, **facts)) == reason


def test_matching_returns_the_triggers_in_file_order() -> None:
    file = parse(
        """\
version: 1
triggers:
  zeta: {on: {push: {branches: [main]}}, prompt: x}
  alpha: {on: push, prompt: x}
  other: {on: {push: {branches: [dev]}}, prompt: x}
  issues: {on: issues, prompt: x}
"""
    )
    push = event("push", branch="main", paths=["a"])
    assert [t.name for t in matching(file, push)] == ["zeta", "alpha"]
    assert matching(file, event("manual")) == []
