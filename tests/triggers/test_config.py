"""The trigger file: every example parses; every problem names its file and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import InvalidInput
from triggers.config import (
    TRIGGER_FILE,
    Problem,
    TriggerFileError,
    check,
    json_schema,
    parse,
)
from triggers.events import KINDS
from triggers.template import TemplateError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "triggers" / "examples").glob("*.yml"))


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    assert check(path.read_text(), filename=path.name) == []
    assert parse(path.read_text()).trigger_list()


def test_the_examples_named_in_the_docs_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "fix-issues.yml",
        "red-tests.yml",
        "review-branch.yml",
        "docs.yml",
        "ci-failed.yml",
        "comment-command.yml",
        "full.yml",
    } <= names
    reference = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    for name in names:
        assert f"triggers/examples/{name}" in reference, name


def test_the_design_example_parses_into_what_the_daemon_needs() -> None:
    file = parse((Path(EXAMPLES[0]).parent / "full.yml").read_text())
    assert file.version == 1
    assert file.defaults.agent == "claude"
    assert file.defaults.timeout_minutes == 45
    assert file.max_parallel == 3
    assert file.setup == ".dispatcher/setup.sh"
    assert file.agents == {"lint-bot": ["./scripts/lint-agent.sh"]}
    assert file.notify[0].type == "ntfy"
    assert file.notify[0].on == ["succeeded", "failed"]
    triggers = {t.name: t for t in file.trigger_list()}
    assert list(triggers) == ["fix-issue", "red-tests", "review-branch", "docs"]

    fix = triggers["fix-issue"]
    assert fix.kinds() == {"issues"}
    assert fix.prompt is None
    assert fix.prompt_file == ".dispatcher/prompts/fix-issue.md"
    assert fix.concurrency is not None
    assert fix.concurrency.cancel_in_progress is True
    assert file.agent_for(fix) == "claude"
    assert file.timeout_minutes_for(fix) == 45
    assert file.setup_for(fix) == ".dispatcher/setup.sh"

    red = triggers["red-tests"]
    assert red.kinds() == {"push", "schedule"}
    assert red.crons() == ["0 3 * * *"]
    assert red.check == "pytest -x -q"
    assert red.check_timeout_minutes == 10
    assert [t for t in file.trigger_list() if t.on.schedule is not None] == [red]

    review = triggers["review-branch"]
    assert review.agent == "codex"
    assert file.agent_for(review) == "codex"
    assert review.on.pull_request is not None
    assert review.on.pull_request.types == ["opened", "synchronize"]

    docs = triggers["docs"]
    assert [t for t in file.trigger_list() if t.on.file_change is not None] == [docs]
    assert docs.file_change_debounce() == 2
    assert red.file_change_debounce() == 2


def test_on_is_a_string_key_under_yaml_1_2() -> None:
    text = yaml(
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: hi
            concurrency: {group: g, cancel-in-progress: no}
        """
    )
    problems = check(text, filename="t.yml")
    # `no` stays the string "no" (YAML 1.1 would make it False): a bool is required.
    assert [(p.line, p.message) for p in problems] == [
        (6, "triggers.t.concurrency.cancel-in-progress: Input should be a valid boolean")
    ]
    trigger = parse(text.replace("cancel-in-progress: no", "cancel-in-progress: false"))
    assert trigger.trigger_list()[0].kinds() == {"push"}


@pytest.mark.parametrize(
    ("on", "kinds"),
    [
        ("push", {"push"}),
        ("[push, issues]", {"push", "issues"}),
        ("{issues: }", {"issues"}),
        ("{manual: , pull_request: {branches: [main]}}", {"manual", "pull_request"}),
        ("{schedule: [{cron: '*/5 * * * 1-5'}]}", {"schedule"}),
    ],
)
def test_on_forms(on: str, kinds: set[str]) -> None:
    file = parse(f"version: 1\ntriggers:\n  t:\n    on: {on}\n    prompt: hi\n")
    assert file.trigger_list()[0].kinds() == kinds


def test_filter_defaults() -> None:
    file = parse(
        yaml(
            """
            version: 1
            triggers:
              pr: {on: pull_request, prompt: x}
              files: {on: {file_change: {paths: "*.py"}}, prompt: x}
              one: {on: {issue_comment: {contains: /agent}}, prompt: x}
            """
        )
    )
    pr, files, one = file.trigger_list()
    assert pr.on.pull_request is not None
    assert pr.on.pull_request.types == ["opened", "synchronize", "reopened"]
    assert files.on.file_change is not None
    assert files.on.file_change.paths == ["*.py"]  # a single string is a list of one
    assert files.on.file_change.debounce_seconds == 2
    assert one.on.issue_comment is not None
    assert one.on.issue_comment.contains == ["/agent"]


def test_branch_is_another_name_for_base_and_concurrency_can_be_a_string() -> None:
    file = parse(
        yaml(
            """
            version: 1
            triggers:
              t:
                on: pull_request
                branch: "${{ event.pull_request.head.ref }}"
                concurrency: "pr-${{ event.number }}"
                prompt: x
            """
        )
    )
    trigger = file.trigger_list()[0]
    assert trigger.base == "${{ event.pull_request.head.ref }}"
    assert trigger.concurrency is not None
    assert trigger.concurrency.group == "pr-${{ event.number }}"
    assert trigger.concurrency.cancel_in_progress is False
    ctx = {"event": {"number": 4, "pull_request": {"head": {"ref": "feat"}}}}
    assert trigger.render_base(ctx) == "feat"
    assert trigger.concurrency_group(ctx) == "pr-4"


def test_agents_accept_a_string_split_like_a_shell_or_an_argv() -> None:
    file = parse(
        yaml(
            """
            version: 1
            agents:
              a: claude -p --model "opus 4"
              b: [aider, --yes]
            triggers: {t: {on: manual, prompt: x}}
            """
        )
    )
    assert file.agents == {"a": ["claude", "-p", "--model", "opus 4"], "b": ["aider", "--yes"]}


def test_notify_entries_parse_and_unknown_keys_are_refused() -> None:
    text = yaml(
        """
        version: 1
        notify:
          - {type: webhook, url: "https://example.com/hook", secret: "env:HOOK_SECRET"}
          - {type: ntfy, url: "https://ntfy.sh/t", on: [failed], priority: high, tags: [robot]}
        triggers: {t: {on: manual, prompt: x}}
        """
    )
    file = parse(text)
    assert file.notify[0].secret == "env:HOOK_SECRET"
    assert (file.notify[1].priority, file.notify[1].tags, file.notify[1].on) == (
        "high",
        ["robot"],
        ["failed"],
    )
    # A typo must not silently send unsigned webhooks.
    problems = check(text.replace("secret:", "secert:"))
    assert problems and "secert" in problems[0].message and problems[0].line == 3


def test_render_prompt_checks_a_prompt_files_text_when_it_is_rendered() -> None:
    file = parse(
        yaml(
            """
            version: 1
            triggers:
              t: {on: issues, prompt-file: .dispatcher/prompts/fix.md}
              inline: {on: issues, prompt: "#${{ event.issue.number }}"}
            """
        )
    )
    trigger, inline = file.trigger_list()
    ctx = {"event": {"issue": {"number": 3}}}
    assert trigger.render_prompt(ctx, prompt_file_text="fix #${{ event.issue.number }}") == (
        "fix #3"
    )
    assert inline.render_prompt(ctx) == "#3"
    with pytest.raises(TemplateError, match=r"\.dispatcher/prompts/fix\.md: .*check\.\*"):
        trigger.render_prompt(ctx, prompt_file_text="${{ check.output_tail }}")
    with pytest.raises(TemplateError, match="no such value"):
        trigger.render_prompt(ctx, prompt_file_text="${{ event.issue.title }}")


# --- problems, each with its exact line ----------------------------------------------------

PROBLEMS: list[tuple[str, str, int, str]] = [
    (
        "unknown key",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: hi
            promt: x
        """,
        6,
        "triggers.t: unknown key 'promt'",
    ),
    (
        "unknown top-level key",
        """
        version: 1
        trigers: {}
        triggers: {t: {on: push, prompt: x}}
        """,
        2,
        "unknown key 'trigers'",
    ),
    (
        "unknown filter",
        """
        version: 1
        triggers:
          t:
            on:
              push:
                branch: [main]
            prompt: x
        """,
        6,
        "triggers.t.on.push: unknown key 'branch'",
    ),
    (
        "a filter of another kind",
        """
        version: 1
        triggers:
          t:
            on:
              issues:
                contains: [x]
            prompt: x
        """,
        6,
        "triggers.t.on.issues: unknown key 'contains'",
    ),
    (
        "bad type",
        """
        version: 1
        max-parallel: many
        triggers: {t: {on: push, prompt: x}}
        """,
        2,
        "max-parallel: Input should be a valid integer",
    ),
    (
        "numbers in strings are not numbers",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            timeout-minutes: "30"
        """,
        6,
        "triggers.t.timeout-minutes: Input should be a valid number",
    ),
    (
        "out of range",
        """
        version: 1
        max-parallel: 0
        triggers: {t: {on: push, prompt: x}}
        """,
        2,
        "max-parallel: Input should be greater than or equal to 1",
    ),
    (
        "missing version",
        """
        triggers: {t: {on: push, prompt: x}}
        """,
        1,
        "missing required key 'version'",
    ),
    (
        "wrong version",
        """
        # comment
        version: 2
        triggers: {t: {on: push, prompt: x}}
        """,
        2,
        "version: must be 1 (the only version of the format)",
    ),
    (
        "bad trigger name",
        """
        version: 1
        triggers:
          ok: {on: push, prompt: x}
          -bad: {on: push, prompt: x}
        """,
        4,
        "triggers: bad trigger name '-bad'",
    ),
    (
        "missing on",
        """
        version: 1
        triggers:
          t:
            prompt: x
        """,
        3,
        "triggers.t: missing required key 'on'",
    ),
    (
        "both prompt and prompt-file",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            prompt-file: p.md
        """,
        6,
        "triggers.t.prompt-file: give prompt or prompt-file, not both",
    ),
    (
        "neither prompt nor prompt-file",
        """
        version: 1
        triggers:
          first: {on: push, prompt: x}
          t:
            on: push
            agent: codex
        """,
        4,
        "triggers.t: needs prompt or prompt-file",
    ),
    (
        "prompt-file outside the repo",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt-file: ../secrets.md
        """,
        5,
        "triggers.t.prompt-file: '../secrets.md' must be a relative path inside the repo",
    ),
    (
        "absolute prompt-file",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt-file: /etc/passwd
        """,
        5,
        "triggers.t.prompt-file: '/etc/passwd' must be a relative path inside the repo",
    ),
    (
        "base and branch",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            base: main
            branch: dev
        """,
        7,
        "triggers.t.branch: give base or branch, not both",
    ),
    (
        "bad cron",
        """
        version: 1
        triggers:
          t:
            on:
              schedule:
                - cron: "0 3 * * *"
                - cron: "61 * * * *"
            prompt: x
        """,
        7,
        "triggers.t.on.schedule.1.cron: invalid cron expression '61 * * * *'",
    ),
    (
        "cron with too few fields",
        """
        version: 1
        triggers:
          t:
            on: {schedule: [{cron: "@daily"}]}
            prompt: x
        """,
        4,
        "triggers.t.on.schedule.0.cron: invalid cron expression '@daily': got 1 fields",
    ),
    (
        "schedule without crons",
        """
        version: 1
        triggers:
          t:
            on: schedule
            prompt: x
        """,
        4,
        'triggers.t.on.schedule: needs a list of {cron: "m h dom mon dow"}',
    ),
    (
        "file_change without paths",
        """
        version: 1
        triggers:
          t:
            on:
              file_change: {debounce-seconds: 1}
            prompt: x
        """,
        5,
        "triggers.t.on.file_change: missing required key 'paths'",
    ),
    (
        "debounce must be positive",
        """
        version: 1
        triggers:
          t:
            on:
              file_change:
                paths: ["*.md"]
                debounce-seconds: 0
            prompt: x
        """,
        7,
        "triggers.t.on.file_change.debounce-seconds: Input should be greater than 0",
    ),
    (
        "branches with branches-ignore",
        """
        version: 1
        triggers:
          t:
            on:
              push:
                branches: [main]
                branches-ignore: [dev]
            prompt: x
        """,
        7,
        "triggers.t.on.push.branches-ignore: use branches or branches-ignore, not both",
    ),
    (
        "paths with paths-ignore",
        """
        version: 1
        triggers:
          t:
            on:
              pull_request:
                paths: [src/**]
                paths-ignore: [docs/**]
            prompt: x
        """,
        7,
        "triggers.t.on.pull_request.paths-ignore: use paths or paths-ignore, not both",
    ),
    (
        "unknown event kind",
        """
        version: 1
        triggers:
          t:
            on:
              push:
              merge_request:
            prompt: x
        """,
        6,
        "triggers.t.on.merge_request: unknown event kind 'merge_request'",
    ),
    (
        "unknown event kind in a list",
        """
        version: 1
        triggers:
          t:
            on: [push, tag]
            prompt: x
        """,
        4,
        "triggers.t.on.tag: unknown event kind 'tag'",
    ),
    (
        "empty on",
        """
        version: 1
        triggers:
          t:
            on: []
            prompt: x
        """,
        4,
        "triggers.t.on: needs at least one event kind",
    ),
    (
        "unknown activity type",
        """
        version: 1
        triggers:
          t:
            on:
              issues:
                types: [opend]
            prompt: x
        """,
        6,
        "triggers.t.on.issues.types: unknown type 'opend'",
    ),
    (
        "unknown conclusion",
        """
        version: 1
        triggers:
          t:
            on:
              workflow_run: {conclusions: [failed]}
            prompt: x
        """,
        5,
        "triggers.t.on.workflow_run.conclusions: unknown conclusion 'failed'",
    ),
    (
        "empty filter list",
        """
        version: 1
        triggers:
          t:
            on:
              push:
                branches: []
            prompt: x
        """,
        6,
        "triggers.t.on.push.branches: needs at least one value",
    ),
    (
        "unknown template root",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: |
              Fix it.
              ${{ env.HOME }}
        """,
        5,
        "triggers.t.prompt: `${{ env.HOME }}`: unknown name 'env'",
    ),
    (
        "check.* without check",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: "${{ check.output_tail }}"
        """,
        5,
        "triggers.t.prompt: `${{ check.output_tail }}`: check.* is only available",
    ),
    (
        "event key not in the trigger's kinds",
        """
        version: 1
        triggers:
          t:
            on: [push, manual]
            prompt: "${{ event.issue.title }}"
        """,
        5,
        "triggers.t.prompt: `${{ event.issue.title }}`: 'issue' is not in the payload of manual,",
    ),
    (
        "bad template in base",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            base: "${{ event.head.ref }}"
        """,
        6,
        "triggers.t.base: `${{ event.head.ref }}`: 'head' is not in the payload of push",
    ),
    (
        "bad template in concurrency.group",
        """
        version: 1
        triggers:
          t:
            on: issues
            prompt: x
            concurrency:
              cancel-in-progress: true
              group: "${{ event.issue.number + 1 }}"
        """,
        8,
        "triggers.t.concurrency.group: `${{ event.issue.number + 1 }}`: not a name",
    ),
    (
        "code in a template",
        """
        version: 1
        triggers:
          t:
            on: issues
            prompt: "${{ __import__('os').system('id') }}"
        """,
        5,
        "triggers.t.prompt: `${{ __import__('os').system('id') }}`: not a name",
    ),
    (
        "template in check",
        """
        version: 1
        triggers:
          t:
            on: issues
            check: "grep ${{ event.issue.title }} x"
            prompt: x
        """,
        5,
        "triggers.t.check: templates are not allowed in check",
    ),
    (
        "bad notify type",
        """
        version: 1
        triggers: {t: {on: push, prompt: x}}
        notify:
          - type: email
            url: x
        """,
        4,
        "notify.0.type: Input should be 'ntfy', 'slack' or 'webhook'",
    ),
    (
        "unsplittable agent command",
        """
        version: 1
        agents:
          a: claude "-p
        triggers: {t: {on: push, prompt: x}}
        """,
        3,
        "agents.a: cannot split 'claude \"-p'",
    ),
    (
        "duplicate key",
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            prompt: y
        """,
        6,
        "duplicate key 'prompt'",
    ),
    (
        "duplicate trigger",
        """
        version: 1
        triggers:
          t: {on: push, prompt: x}
          u: {on: push, prompt: x}
          t: {on: issues, prompt: y}
        """,
        5,
        "duplicate key 't'",
    ),
    ("empty file", "", 1, "the file is empty"),
    ("only comments", "# nothing yet\n", 1, "the file is empty"),
    ("a list", "- version: 1\n", 1, "expected a mapping with version and triggers, got a list"),
    ("a scalar", "\n\nhello\n", 1, "expected a mapping with version and triggers, got a string"),
]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [(text, line, message) for _, text, line, message in PROBLEMS],
    ids=[case[0] for case in PROBLEMS],
)
def test_problems_name_the_line(text: str, line: int, message: str) -> None:
    problems = check(yaml(text), filename="repo:.dispatcher/triggers.yml")
    assert problems, "expected a problem"
    assert str(problems[0]).startswith(f"repo:.dispatcher/triggers.yml:{line}: ")
    assert message in problems[0].message, problems
    assert len(problems) == 1, problems


def test_problem_lines_are_exact_strings() -> None:
    text = yaml(
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: x
            promt: x
        """
    )
    assert [str(p) for p in check(text)] == [f"{TRIGGER_FILE}:6: triggers.t: unknown key 'promt'"]


def test_every_problem_is_reported_in_line_order() -> None:
    text = yaml(
        """
        version: 1
        max-parallel: 0
        triggers:
          a:
            on: {push: {branches: [main], branches-ignore: [x]}}
            prompt: x
          b:
            on: push
            prompt: "${{ nope }}"
          c:
            on: push
            prompt: x
            prompt-file: y.md
        """
    )
    with pytest.raises(TriggerFileError) as caught:
        parse(text, filename="t.yml")
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert [p.line for p in error.problems] == [2, 5, 9, 13]
    assert error.message == "; ".join(str(p) for p in error.problems)
    assert error.details["problems"][0] == {
        "file": "t.yml",
        "line": 2,
        "column": None,
        "message": "max-parallel: Input should be greater than or equal to 1",
    }


def test_several_template_problems_in_one_trigger_each_have_their_line() -> None:
    text = yaml(
        """
        version: 1
        triggers:
          t:
            on: push
            prompt: "${{ event.issue.number }} ${{ repo.nme }}"
            base: "${{ trigger.id }}"
        """
    )
    problems = check(text)
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (5, "triggers.t.prompt"),
        (5, "triggers.t.prompt"),
        (6, "triggers.t.base"),
    ]


SYNTAX_ERRORS = [
    (
        "unclosed [",
        "version: 1\ntriggers:\n  t:\n    on: [push, issues\n    prompt: x\n",
        "t.yml:4:9: YAML syntax error: '[' opened here is never closed; the parser gave up "
        "at 5:11: expected ',' or ']', but got ':'",
    ),
    (
        "unclosed [ at the end of the file",
        "version: 1\ntriggers: {}\nkeep: [node_modules\n",
        "t.yml:3:7: YAML syntax error: '[' opened here is never closed; the parser gave up "
        "at 4:1: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "unclosed {",
        "version: 1\ntriggers:\n  t: {on: push, prompt: x\n  u: {on: push, prompt: y}\n",
        "t.yml:3:6: YAML syntax error: '{' opened here is never closed; the parser gave up "
        "at 4:4: expected ',' or '}', but got ':'",
    ),
    (
        "unclosed double quote",
        'version: 1\ntriggers:\n  t:\n    prompt: "Fix it\n    on: push\n',
        "t.yml:4:13: YAML syntax error: '\"' opened here is never closed; the parser gave up "
        "at 6:1: found unexpected end of stream",
    ),
    (
        "unclosed single quote",
        "version: 1\ntriggers:\n  t:\n    on: push\n    prompt: 'Fix it\n",
        't.yml:5:13: YAML syntax error: "\'" opened here is never closed; the parser gave up '
        "at 6:1: found unexpected end of stream",
    ),
    (
        "a key indented less than its siblings",
        "version: 1\ntriggers:\n  t:\n    on: push\n   prompt: x\n",
        "t.yml:3:3: YAML syntax error: in the mapping that starts here; the parser gave up "
        "at 5:4: expected <block end>, but found '<block mapping start>' (check the indentation)",
    ),
    (
        "a key indented more than its siblings",
        "version: 1\ntriggers:\n  t:\n    on: push\n      prompt: x\n",
        "t.yml:5:13: YAML syntax error: mapping values are not allowed here "
        "(check the indentation)",
    ),
    (
        "tab indentation",
        "version: 1\ntriggers:\n\tt: {}\n",
        "t.yml:3:1: YAML syntax error: found character '\\t' that cannot start any token "
        "(indent with spaces: YAML does not allow tabs there)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in SYNTAX_ERRORS],
    ids=[case[0] for case in SYNTAX_ERRORS],
)
def test_a_syntax_error_says_where_its_construct_opened_and_where_the_parser_gave_up(
    text: str, expected: str
) -> None:
    assert [str(p) for p in check(text, filename="t.yml")] == [expected]


def test_every_problem_of_every_trigger_is_reported_in_one_pass() -> None:
    # Before: pydantic skips a model's cross-field checks (templates, pairs of keys) once
    # one of its fields fails, and `on:` stopped at its first unknown kind; a duplicate
    # key stopped everything. Each kind of problem here hid the ones after it.
    text = yaml(
        """
        version: 1
        max-parallel: 0
        triggers:
          schema-and-template:
            on: push
            timeout-minutes: -1
            prompt: "${{ event.issue.title }}"
          filters:
            on: {push: {branches: [main], branches-ignore: [x], paths: 5}}
            prompt: x
          kinds-and-cron:
            on:
              pushh:
              schedule: [{cron: "61 * * * *"}]
            promt: x
            concurrency: "${{ event.x }}"
          duplicate:
            on: issues
            prompt: x
            prompt: y
            base: "${{ check.output_tail }}"
          pairs:
            on: push
            branch: x
            base: y
            prompt: x
            prompt-file: p.md
        """
    )
    problems = check(text, filename="t.yml")
    assert [(p.line, p.message.split(": ")[0]) for p in problems] == [
        (2, "max-parallel"),
        (6, "triggers.schema-and-template.timeout-minutes"),
        (7, "triggers.schema-and-template.prompt"),
        (9, "triggers.filters.on.push.paths"),
        (9, "triggers.filters.on.push.branches-ignore"),
        (11, "triggers.kinds-and-cron"),
        (13, "triggers.kinds-and-cron.on.pushh"),
        (14, "triggers.kinds-and-cron.on.schedule.0.cron"),
        (15, "triggers.kinds-and-cron"),
        (16, "triggers.kinds-and-cron.concurrency.group"),
        (20, "duplicate key 'prompt' (first at line 19)"),
        (21, "triggers.duplicate.base"),
        (24, "triggers.pairs.branch"),
        (27, "triggers.pairs.prompt-file"),
    ], "\n".join(map(str, problems))
    messages = [p.message for p in problems]
    assert "'issue' is not in the payload of push" in messages[2]
    assert "needs prompt or prompt-file" in messages[5]
    assert "unknown key 'promt'" in messages[8]
    # The template is checked against the kinds that are known (schedule), not pushh.
    assert "'x' is not in the payload of schedule" in messages[9]
    assert "check.* is only available" in messages[11]


def test_every_duplicate_key_is_reported_and_the_first_value_counts() -> None:
    text = yaml(
        """
        version: 1
        triggers:
          t: {on: push, prompt: x}
          t: {on: push, prompt: y}
          u:
            on: push
            on: issues
            prompt: "${{ event.issue.number }}"
        """
    )
    assert [str(p) for p in check(text, filename="t.yml")] == [
        "t.yml:4: duplicate key 't' (first at line 3)",
        "t.yml:7: duplicate key 'on' (first at line 6)",
        "t.yml:8: triggers.u.prompt: `${{ event.issue.number }}`: 'issue' is not in the "
        "payload of push (its keys: after, base_ref, before, commits, compare, created, "
        "deleted, forced, head_commit, pusher, ref, repository, sender)",
    ]


def test_a_valid_file_with_branch_still_starts_from_it() -> None:
    text = yaml(
        """
        version: 1
        triggers:
          t: {on: push, prompt: x, branch: release}
        """
    )
    (trigger,) = parse(text).trigger_list()
    assert (trigger.base, trigger.branch) == ("release", None)


def test_problem_str() -> None:
    assert str(Problem(file="a.yml", line=3, message="bad")) == "a.yml:3: bad"
    assert str(Problem(file="a.yml", line=3, column=7, message="bad")) == "a.yml:3:7: bad"


# --- JSON Schema ---------------------------------------------------------------------------


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_json_schema_uses_the_keys_as_written() -> None:
    schema = json_schema()
    json.dumps(schema)  # serializable
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert {
        "version", "defaults", "max-parallel", "setup", "setup-timeout-minutes", "cleanup",
        "copy", "link", "agents", "notify", "keep", "max-leftover-file-mb", "triggers",
        "fix-authors", "hub",
    } == set(schema["properties"])  # fmt: skip
    assert schema["required"] == ["version"]  # a file of repo settings has no triggers
    defs = schema["$defs"]
    trigger = defs["Trigger"]["properties"]
    for key in (
        "on", "prompt", "prompt-file", "check", "check-timeout-minutes", "base", "sparse",
        "max-cost-usd", "skills", "max-fix-attempts",
    ):  # fmt: skip
        assert key in trigger
    assert "timeout-minutes" in trigger
    assert "cancel-in-progress" in defs["Concurrency"]["properties"]
    assert set(defs["On"]["properties"]) == set(KINDS)
    assert "branches-ignore" in defs["PushFilter"]["properties"]
    assert "debounce-seconds" in defs["FileChangeFilter"]["properties"]
    # `on` may be a kind, a list of kinds, or a mapping.
    forms = trigger["on"]["anyOf"]
    assert {"enum": list(KINDS), "type": "string"} in forms
    assert {"$ref": "#/$defs/On"} in forms
    # every $ref resolves, and no Python names leaked through
    for node in _walk(schema):
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in defs
        for key in node.get("properties", {}):
            assert "_" not in key or key in KINDS, key
    assert "description" in trigger["prompt"]


KEEP_BASE = "version: 1\nkeep: {}\ntriggers:\n  a:\n    on: push\n    prompt: hi\n"
SPARSE_BASE = "version: 1\ntriggers:\n  a:\n    on: push\n    prompt: hi\n    sparse: {}\n"
WORKSPACE_BASE = (
    "version: 1\nsetup: make deps\nsetup-timeout-minutes: 2\ncleanup: make clean\n"
    "copy: {}\nlink: [node_modules]\ntriggers:\n  a:\n    on: push\n    prompt: hi\n"
    "    max-cost-usd: 1.5\n"
)


def test_keep_names_top_level_directories_only() -> None:
    assert parse(KEEP_BASE.format("[node_modules, .venv]")).keep == ["node_modules", ".venv"]


def test_sparse_names_directories_inside_the_repo() -> None:
    parsed = parse(SPARSE_BASE.format("[src/, docs/api]")).trigger_list()[0]
    assert parsed.sparse == ["src", "docs/api"]
    assert parse(SPARSE_BASE.format("[]")).trigger_list()[0].sparse == []


def test_workspace_keys_parse_and_paths_must_stay_inside_the_repo() -> None:
    parsed = parse(WORKSPACE_BASE.format("[.env, config/local.json]"))
    assert parsed.copy_paths == [".env", "config/local.json"]
    assert parsed.link_paths == ["node_modules"]
    assert (parsed.cleanup, parsed.setup_timeout_minutes) == ("make clean", 2)
    assert parsed.trigger_list()[0].max_cost_usd == 1.5


REFUSED_PATHS = [
    (KEEP_BASE, 2, "keep", ['["../up"]', '[".."]', '["a/b"]', '["/abs"]', '[""]', '["-cache"]']),
    (SPARSE_BASE, 6, "sparse", ['["../up"]', '["/abs"]', '["."]', '["a/../../b"]', '["/"]']),
    (
        WORKSPACE_BASE,
        5,
        "copy",
        ['["../x"]', '["/etc/passwd"]', '["."]', "[.git]", "[sub/.git/config]"],
    ),
]


@pytest.mark.parametrize(
    ("base", "bad", "line", "key"),
    [
        pytest.param(base, bad, line, key, id=f"{key}: {bad}")
        for base, line, key, bads in REFUSED_PATHS
        for bad in bads
    ],
)
def test_paths_that_leave_their_place_are_refused_on_their_line(
    base: str, bad: str, line: int, key: str
) -> None:
    """keep: top-level directories only; sparse: directories inside the repo; copy: paths
    inside the repo, never into .git."""
    problems = check(base.format(bad))
    assert problems, bad
    assert all(p.line == line and key in p.message for p in problems), problems


def test_max_leftover_file_mb_is_a_number_not_below_zero() -> None:
    base = "version: 1\nmax-leftover-file-mb: {}\ntriggers:\n  a:\n    on: push\n    prompt: hi\n"
    assert parse(base.format("2.5")).max_leftover_file_mb == 2.5
    assert parse(base.format("0")).max_leftover_file_mb == 0
    assert parse(base.replace("max-leftover-file-mb: {}\n", "")).max_leftover_file_mb is None
    for bad in ("-1", "lots"):
        problems = check(base.format(bad))
        assert problems and all(p.line == 2 for p in problems), (bad, problems)


def test_hub_is_a_remote_name() -> None:
    base = "version: 1\nhub: {}\n"
    assert parse(base.format("hub")).hub == "hub"
    assert parse("version: 1\n").hub is None
    for bad in ("-x", "a b", "../up"):
        problems = check(base.format(repr(bad)))
        assert problems and all(p.line == 2 for p in problems), (bad, problems)


@pytest.mark.parametrize("triggers", ["", "triggers: {}\n"])
def test_a_file_of_repo_settings_only_is_valid(triggers: str) -> None:
    """For jobs started by hand (`dispatcher run`): setup, copy, link, agents, notify and
    no trigger. It was refused ("triggers: needs at least one trigger")."""
    text = "version: 1\nsetup: npm ci\ncopy: [.env]\nagents:\n  lint-bot: ./lint.sh\n" + triggers
    file = parse(text)
    assert file.trigger_list() == []
    assert file.setup == "npm ci" and dict(file.agents) == {"lint-bot": ["./lint.sh"]}


def test_on_success_per_trigger_and_in_defaults() -> None:
    text = yaml(
        """
        version: 1
        defaults: {on-success: {push: true}}
        triggers:
          plain: {on: manual, prompt: x}
          pr: {on: manual, prompt: x, on-success: {pr: {draft: true, labels: [agent]}}}
          pr-simple: {on: manual, prompt: x, on-success: {pr: true, remote: upstream}}
          none: {on: manual, prompt: x, on-success: {}}
        """
    )
    file = parse(text)
    got = {t.name: file.on_success_for(t) for t in file.trigger_list()}
    assert got["plain"] == {"push": True, "remote": "origin"}
    assert got["pr"] == {
        "push": True, "remote": "origin", "pr": {"draft": True, "base": None, "labels": ["agent"]}
    }  # fmt: skip
    assert got["pr-simple"] == {
        "push": True, "remote": "upstream", "pr": {"draft": False, "base": None, "labels": []}
    }  # fmt: skip
    assert got["none"] is None  # its own (empty) on-success wins over the defaults'
    assert "on-success" in json.dumps(json_schema())
    # A token in the file is refused (unknown key), and a typo is reported at its line.
    problems = check(text.replace("{push: true}", "{push: true, token: abc}"))
    assert problems and "token" in problems[0].message and problems[0].line == 2
    problems = check(text.replace("labels: [agent]", "lables: [agent]"))
    assert problems and "lables" in problems[0].message and problems[0].line == 5
    assert check(text.replace("remote: upstream", "remote: --upload-pack=x"))
