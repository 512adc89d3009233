"""Gemini CLI's output parser, on what gemini 0.61.0 really printed (tests/fixtures/agents/gemini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.agents.builtin import gemini
from dispatcher.agents.output import parse_lines
from dispatcher.agents.profiles import build_argv
from tests.agents import fixtures


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no-key.stderr.txt", "Please set an Auth method in your "),
        ("untrusted.stderr.txt", "Gemini CLI is not running in a trusted directory."),
        ("resume-missing.stderr.txt", "Error resuming session: No previous sessions found"),
    ],
)
def test_a_fatal_stderr_line_is_the_error(name: str, reason: str) -> None:
    report = fixtures.parse("gemini", name)
    assert report.is_error
    assert report.error is not None and report.error.startswith(reason)
    assert "\x1b" not in report.error  # the untrusted line is printed in red


def test_no_key_names_the_variables_to_set() -> None:
    report = fixtures.parse("gemini", "no-key.stderr.txt")
    assert report.error is not None and "GEMINI_API_KEY" in report.error


def test_no_network_is_the_error_result_after_the_retries() -> None:
    """With a key and no network gemini retries for about five minutes, then prints a
    ``result`` with ``status: "error"`` and the API error (exit 1)."""
    report = fixtures.parse("gemini", "key-no-network.jsonl", "key-no-network.stderr.txt")
    assert report.is_error
    assert report.error == "[API Error: exception TypeError: fetch failed sending request]"
    assert report.session_id == "c4c9246d-4fc8-418b-b02a-d58d27620207"
    assert report.model == "auto"
    assert (report.input_tokens, report.output_tokens) == (0, 0)


def test_a_run_cut_off_while_retrying_keeps_its_session_and_no_error() -> None:
    """Cut off before its result (the job's timeout does that), only ``init`` and the
    user message were printed: the session is known and nothing says it failed."""
    lines = [
        line
        for line in fixtures.lines("gemini", "key-no-network.jsonl")
        if '"type":"result"' not in line
    ]
    report = parse_lines("gemini", [*lines, *fixtures.lines("gemini", "key-no-network.stderr.txt")])
    assert report.session_id == "c4c9246d-4fc8-418b-b02a-d58d27620207"
    assert not report.is_error


def test_a_resumed_run_names_the_resumed_session() -> None:
    report = fixtures.parse("gemini", "resumed.jsonl")
    assert report.session_id == "04cdef03-eae4-461b-bd24-4cadc12d80bf"
    assert not report.is_error


def test_success() -> None:
    report = fixtures.parse("gemini", "success.jsonl")
    assert not report.is_error and report.error is None
    assert report.summary == "I added a line to README.md."
    assert (report.input_tokens, report.output_tokens) == (9102, 219)
    assert report.session_id == "5b0c6a3e-2f4d-4e8a-9d71-3c2b1a0f9e8d"
    assert report.model == "gemini-2.5-pro"
    assert report.cost_usd is None and report.turns is None


def test_error_result_takes_the_last_error_event_not_the_warning() -> None:
    report = fixtures.parse("gemini", "error-result.jsonl")
    assert report.is_error
    assert report.error == "Maximum session turns exceeded"
    assert (report.input_tokens, report.output_tokens) == (100, 20)


def test_a_fatal_line_does_not_override_a_reported_error() -> None:
    report = fixtures.parse("gemini", "error-result.jsonl", "no-key.stderr.txt")
    assert report.error == "Maximum session turns exceeded"


def test_a_fatal_line_fails_a_run_that_reported_success() -> None:
    report = fixtures.parse("gemini", "success.jsonl", "resume-missing.stderr.txt")
    assert report.is_error
    assert report.summary == "I added a line to README.md."


def test_progress_lines_on_stderr_are_not_failures() -> None:
    lines = [
        "YOLO mode is enabled. All tool calls will be automatically approved.",
        'Approval mode overridden to "default" because the current folder is not trusted.',
        "Ripgrep is not available. Falling back to GrepTool.",
        *fixtures.lines("gemini", "success.jsonl"),
    ]
    assert not parse_lines("gemini", lines).is_error


def test_every_json_line_of_the_fixtures_is_known() -> None:
    assert not fixtures.unknown_events(
        gemini.PARSER(), "gemini", "success.jsonl", "error-result.jsonl", "key-no-network.jsonl"
    )


def test_profile_trusts_the_worktree_and_resumes_by_session_id(tmp_path: Path) -> None:
    profile = gemini.PROFILE
    argv = build_argv(profile, prompt_file=tmp_path / "p", workdir=tmp_path, resume_session="s-1")
    assert argv == [*profile.argv, "--resume", "s-1"]
    assert "--skip-trust" in argv
    # GEMINI_SYSTEM_MD names a file that replaces the whole system prompt: no text flag
    assert profile.system_prompt_flag is None
    assert profile.budget_flag is None and not profile.reports_cost
