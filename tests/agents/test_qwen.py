"""Qwen Code's output parser, on what qwen 0.24.4 really printed (tests/fixtures/agents/qwen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatcher.agents.builtin import qwen
from dispatcher.agents.output import parse_lines
from dispatcher.agents.profiles import build_argv
from tests.agents import fixtures

SESSION = "7d1e2c3b-4a5f-4e6d-8c7b-9a0f1e2d3c4b"


def test_no_auth_is_an_error_result() -> None:
    report = fixtures.parse("qwen", "no-auth.jsonl", "no-auth.stderr.txt")
    assert report.is_error
    assert report.error == (
        "No auth type is selected. Please configure an auth type (e.g. via settings or "
        "`--auth-type`) before running in non-interactive mode."
    )
    assert report.session_id == "a57357e1-5286-40f8-b6f9-9ad0e4da6f33"
    assert report.turns == 0


def test_no_network_is_the_connection_error() -> None:
    report = fixtures.parse("qwen", "key-no-network.jsonl", "key-no-network.stderr.txt")
    assert report.is_error
    assert report.error is not None
    assert report.error.startswith("[API Error: Connection error.")
    assert "ENOTFOUND" in report.error
    assert report.session_id == "3e52ea0e-e41b-4586-b797-b868130e9458"
    assert report.model == "qwen3.7-max"
    assert report.turns == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("resume-missing.stderr.txt", "No saved session found with ID 3e52ea0e-"),
        ("max-turns.stderr.txt", "Reached max session turns for this session."),
    ],
)
def test_a_fatal_stderr_line_is_the_error(name: str, reason: str) -> None:
    report = fixtures.parse("qwen", name)
    assert report.is_error
    assert report.error is not None and report.error.startswith(reason)


def test_a_resumed_run_keeps_the_session() -> None:
    report = fixtures.parse("qwen", "resumed.jsonl")
    assert report.session_id == "7dd7b6b7-523b-4b88-8935-00b172d60e54"
    assert report.is_error and report.error is not None and "ENOTFOUND" in report.error


def test_success() -> None:
    report = fixtures.parse("qwen", "success.jsonl")
    assert not report.is_error and report.error is None
    assert report.summary == "Added a line to README.md."
    # input_tokens already counts the cached prompt tokens: not added again
    assert (report.input_tokens, report.output_tokens) == (10420, 76)
    assert report.turns == 2
    assert report.session_id == SESSION
    assert report.model == "qwen3-coder-plus"
    assert report.cost_usd is None


def test_without_a_result_the_summary_is_the_last_assistant_text() -> None:
    lines = [
        line for line in fixtures.lines("qwen", "success.jsonl") if '"type":"result"' not in line
    ]
    report = parse_lines("qwen", lines)
    assert not report.is_error
    assert report.summary == "Added a line to README.md."
    assert report.session_id == SESSION
    assert report.turns is None


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (
            {"subtype": "error_during_execution", "is_error": True},
            "qwen reported error_during_execution",
        ),
        ({"subtype": "error_max_turns"}, "qwen reported error_max_turns"),
        ({"is_error": True, "result": "partial"}, "partial"),
        ({"is_error": True, "error": {"message": "boom\n  twice"}}, "boom twice"),
        ({"is_error": True, "error": "not an object"}, "qwen reported an error"),
    ],
)
def test_error_results(result: dict[str, object], error: str) -> None:
    report = parse_lines("qwen", [json.dumps({"type": "result", **result})])
    assert report.is_error
    assert report.error == error


def test_wrong_types_are_absent() -> None:
    event = {"type": "result", "subtype": "success", "usage": [], "num_turns": "2", "result": 3}
    report = parse_lines("qwen", [json.dumps(event)])
    assert not report.is_error
    assert report.input_tokens is None and report.turns is None and report.summary is None


def test_the_last_result_wins() -> None:
    report = fixtures.parse("qwen", "no-auth.jsonl", "success.jsonl")
    assert not report.is_error
    assert report.session_id == SESSION


def test_stderr_warnings_are_not_failures() -> None:
    report = fixtures.parse("qwen", "key-no-network.stderr.txt", "success.jsonl")
    assert not report.is_error


def test_every_json_line_of_the_fixtures_is_known() -> None:
    assert not fixtures.unknown_events(
        qwen.PARSER(), "qwen", "success.jsonl", "no-auth.jsonl", "key-no-network.jsonl"
    )


def test_profile_resumes_and_appends_the_system_prompt(tmp_path: Path) -> None:
    profile = qwen.PROFILE
    argv = build_argv(
        profile,
        prompt_file=tmp_path / "p",
        workdir=tmp_path,
        resume_session="s-1",
        system_prompt="Keep it small.",
    )
    assert argv == [*profile.argv, "--resume", "s-1", "--append-system-prompt", "Keep it small."]
    assert profile.stdin_prompt and profile.reads_agents_md
    assert profile.budget_flag is None and not profile.reports_cost
