"""goose's parser on what goose 1.37.0 really printed (tests/fixtures/agents/goose)."""

from __future__ import annotations

import pytest

from dispatcher.agents.builtin.goose import provider_error
from dispatcher.agents.output import parse_lines
from tests.agents import fixtures


def test_success_reads_summary_session_model_and_tokens() -> None:
    report = fixtures.parse("goose", "success-local-stub.txt")
    assert report.summary == "Done: I read the task and changed nothing."
    assert not report.is_error
    assert report.session_id == "20261202_1"
    assert report.model == "stub-model"
    assert (report.input_tokens, report.output_tokens) == (1200, 15)
    assert report.cost_usd is None  # goose 1.37 prints no cost


def test_resumed_session_reports_the_sessions_totals() -> None:
    report = fixtures.parse("goose", "resume-local-stub.txt")
    assert report.session_id == "20261202_1"
    assert (report.input_tokens, report.output_tokens) == (2400, 30)


def test_later_schema_with_tools_and_cost() -> None:
    report = fixtures.parse("goose", "success-with-tools-schema.txt")
    assert report.summary == "Added `world` to README.md."
    assert report.cost_usd == pytest.approx(0.01725)
    assert (report.input_tokens, report.output_tokens) == (5100, 130)
    assert report.model == "claude-sonnet-4-5"
    assert report.session_id == "20261202_3"
    assert not report.is_error


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no-provider.txt", "No provider configured. Run 'goose configure' first."),
        ("no-key.txt", "Error Configuration value not found: ANTHROPIC_API_KEY."),
        (
            "no-network.txt",
            "Network error: Could not connect to api.openai.com — check your network "
            "connection and try again.",
        ),
        ("no-such-session.txt", "Cannot resume session 20991231_9 - no such session exists"),
        ("credits-exhausted-schema.txt", "Please add credits to your account"),
        ("error-event-schema.txt", "Tool approval required in non-interactive mode"),
    ],
)
def test_failures_name_their_reason(name: str, reason: str) -> None:
    report = fixtures.parse("goose", name)
    assert report.is_error
    assert report.error is not None and report.error.startswith(reason)


def test_a_rejected_key_is_an_error_though_goose_exits_0() -> None:
    report = fixtures.parse("goose", "bad-key.txt")
    assert report.is_error
    assert report.error is not None
    assert report.error.startswith("Authentication error: Authentication failed for http")
    assert "401 Unauthorized" in report.error
    assert report.session_id == "20261202_1"


def test_a_later_answer_clears_an_earlier_provider_error() -> None:
    failed = fixtures.lines("goose", "no-network.txt")
    answered = fixtures.lines("goose", "success-local-stub.txt")
    assert not parse_lines("goose", failed + answered).is_error


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "Ran into this error: Boom.\n\nPlease retry if you think this is a transient or "
            "recoverable error.",
            "Boom",
        ),
        ("Network error: down\n\nPlease resend your message to try again.", "Network error: down"),
        ("Ran into this error: ", "Ran into this error:"),
        ("All done. Please resend your message to try again.", "All done."),
        ("Nothing went wrong.", None),
        ("I ran into this error: none", None),
    ],
)
def test_provider_error(text: str, reason: str | None) -> None:
    assert provider_error(text) == reason


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"complete","total_tokens":null,"input_tokens":"12","cost_usd":-1}',
        '{"type":"message","message":{"role":"assistant","content":"not a list"}}',
        '{"type":"message","message":[]}',
        '{"type":"notification","extension_id":"x","progress":{"progress":1}}',
        "    __( O)>  ● new session · openai",
    ],
)
def test_bad_or_partial_events_are_absent_fields(line: str) -> None:
    report = parse_lines("goose", [line])
    assert report.cost_usd is None and report.input_tokens is None
    assert not report.is_error
    assert report.model is None


def test_ansi_in_the_banner_is_ignored() -> None:
    report = parse_lines(
        "goose",
        ["\x1b[2m    __( O)>  ● new session · openai gpt-4o\x1b[0m", "   \\____)    s_1 · /r"],
    )
    assert (report.model, report.session_id) == ("gpt-4o", "s_1")
