"""opencode's parser on what opencode 1.18.33 really printed (tests/fixtures/agents/opencode)."""

from __future__ import annotations

import json

import pytest

from dispatcher.agents.output import parse_lines
from tests.agents import fixtures


def test_success_reads_summary_session_cost_and_tokens() -> None:
    report = fixtures.parse("opencode", "success-local-stub.txt")
    assert report.summary == "Done: I read the task and changed nothing."
    assert not report.is_error
    assert report.session_id == "ses_dcaf49fe7ffeoIOG8UmGhcTi9L"
    assert report.cost_usd == pytest.approx(0.003825)
    assert (report.input_tokens, report.output_tokens, report.turns) == (1200, 15, 1)
    assert report.model is None  # no JSON event names it


def test_resume_keeps_the_session_and_counts_only_this_run() -> None:
    report = fixtures.parse("opencode", "resume-local-stub.txt")
    assert report.session_id == "ses_dcaf49fe7ffeoIOG8UmGhcTi9L"
    assert report.cost_usd == pytest.approx(0.003825)


def test_steps_sum_cost_and_all_input_tokens() -> None:
    report = fixtures.parse("opencode", "success-with-tools-schema.jsonl")
    assert report.summary == "Added `world` to README.md."
    assert report.cost_usd == pytest.approx(0.0169)
    assert report.input_tokens == 300 + 2000 + 9920 + 120 + 12355
    assert report.output_tokens == 60 + 20 + 25
    assert report.turns == 2
    assert report.session_id == "ses_0a1b2c3d4e5fABCDEFGHIJ"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "no-credentials-no-network.txt",
            "Cannot connect to API: Unable to connect. Is the computer able to access the url?",
        ),
        ("no-such-session.txt", "Session not found"),
        (
            "model-not-found.txt",
            "ProviderModelNotFoundError: Model not found: anthropic/claude-sonnet-4-5. "
            "Did you mean: claude-sonnet-4-5, claude-sonnet-4-5-20250929?",
        ),
    ],
)
def test_failures_name_their_reason(name: str, reason: str) -> None:
    report = fixtures.parse("opencode", name)
    assert report.is_error
    assert report.error == reason


def test_text_parts_of_one_message_are_joined_and_a_new_message_replaces_them() -> None:
    def text(message: str, value: str) -> str:
        part = {"type": "text", "messageID": message, "text": value}
        return json.dumps({"type": "text", "sessionID": "s", "part": part})

    report = parse_lines("opencode", [text("m1", "a"), text("m1", "b")])
    assert report.summary == "a\nb"
    report = parse_lines("opencode", [text("m1", "a"), text("m2", "c"), text("m2", " ")])
    assert report.summary == "c"


def test_an_unknown_error_without_its_log_line_keeps_its_message() -> None:
    line = fixtures.lines("opencode", "model-not-found.txt")[3]
    report = parse_lines("opencode", [line])
    assert report.error == "Unexpected server error. Check server logs for details."


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"step_finish","part":{"cost":"1","tokens":{"input":-3,"cache":[]}}}',
        '{"type":"step_finish","part":[]}',
        '{"type":"text","part":{"text":42}}',
        '{"type":"error","error":"not an object"}',
    ],
)
def test_bad_fields_are_absent(line: str) -> None:
    report = parse_lines("opencode", [line])
    assert report.cost_usd is None and report.input_tokens is None
    assert report.summary is None
    if '"error"' in line:
        assert report.error == "opencode reported an error"
