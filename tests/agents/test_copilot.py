"""The copilot parser on GitHub Copilot CLI 1.0.102's real output (tests/fixtures/agents/copilot)."""

from __future__ import annotations

import json

import pytest

from dispatcher.agents.output import parse_lines
from tests.agents import fixtures


def test_a_real_successful_run() -> None:
    report = fixtures.parse("copilot", "success-byok.jsonl")
    assert report.summary == "Added a line to README.md."
    assert not report.is_error
    assert report.session_id == "8454d89b-ab32-4cd2-ac51-a6bdd0b2b149"
    assert report.model == "fake-model"
    assert report.turns == 1
    assert report.cost_usd is None  # premium requests are not USD
    assert report.input_tokens is None  # assistant.usage is not in the stream


def test_a_real_resumed_run_keeps_the_session() -> None:
    report = fixtures.parse("copilot", "resume-byok.jsonl")
    assert report.session_id == "8454d89b-ab32-4cd2-ac51-a6bdd0b2b149"
    assert not report.is_error


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("no-login.txt", "No authentication information found."),
        (
            "token-offline.txt",
            "Authentication token found but could not be validated. (Failed to fetch PAT user "
            "login: network fetch failed: request failed: error sending request for url "
            "(https://api.github.com/copilot_internal/user))",
        ),
        (
            "resume-unknown-session.txt",
            "No session, task, or name matched '0cb916db-26aa-40f2-86b5-1ba81b225fd2'.",
        ),
    ],
)
def test_failures_before_the_session_are_one_line(name: str, error: str) -> None:
    report = fixtures.parse("copilot", name)
    assert report.is_error
    assert report.error == error


def test_a_session_error_fails_the_run_and_a_retried_one_does_not_name_it() -> None:
    report = fixtures.parse("copilot", "session-error.jsonl")
    assert report.is_error
    assert report.error == "You have exceeded your premium request allowance."
    assert report.turns == 1


def test_a_sub_agents_messages_and_turns_are_not_the_answer() -> None:
    report = fixtures.parse("copilot", "subagent.jsonl")
    assert report.summary == "Added a line to README.md."
    assert report.turns == 2
    assert report.output_tokens == 30 + 20
    assert report.model == "claude-sonnet-4.6"
    assert report.session_id == "8454d89b-ab32-4cd2-ac51-a6bdd0b2b149"


def _line(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


def test_an_exit_code_without_an_error_event_names_the_code() -> None:
    report = parse_lines("copilot", [_line("result", sessionId="s", exitCode=1)])
    assert report.is_error
    assert report.error == "copilot exited with code 1"
    assert report.session_id == "s"


def test_a_blocking_warning_is_the_error_and_others_are_not() -> None:
    lines = [
        _line("session.warning", data={"warningType": "mcp", "message": "an MCP server is slow"}),
        _line("session.warning", data={"warningType": "policy_blocked", "message": "blocked"}),
        _line("result", exitCode=1),
    ]
    assert parse_lines("copilot", lines).error == "blocked"
    assert not parse_lines("copilot", [lines[0], _line("result", exitCode=0)]).is_error


def test_an_error_event_without_a_result_fails() -> None:
    report = parse_lines("copilot", [_line("session.error", data={"errorType": "authentication"})])
    assert report.is_error
    assert report.error == "copilot reported an error"


def test_wrong_types_are_ignored() -> None:
    lines = [
        _line("assistant.message", data={"content": 3, "outputTokens": "9", "model": None}),
        _line("assistant.message", data=[]),
        _line("result", exitCode="0", sessionId=7),
        json.dumps({"type": 5}),
        "Error:",  # no reason after it: not a failure line
    ]
    report = parse_lines("copilot", lines)
    assert report == type(report)(summary=None, turns=None)


def test_only_the_first_error_line_is_the_failure() -> None:
    report = parse_lines("copilot", ["Error: first", "", "Error: second"])
    assert report.error == "first"


def test_the_hint_lines_after_an_error_are_not_its_detail() -> None:
    lines = fixtures.lines("copilot", "no-login.txt")
    assert "Copilot can be authenticated" in "\n".join(lines)
    assert parse_lines("copilot", lines).error == "No authentication information found."


def test_an_error_line_does_not_undo_a_run_that_ended_well() -> None:
    lines = ["Error: something on stderr", _line("result", sessionId="s", exitCode=0)]
    assert not parse_lines("copilot", lines).is_error
    failed = ["Error: something on stderr", _line("result", sessionId="s", exitCode=1)]
    assert parse_lines("copilot", failed).error == "something on stderr"
