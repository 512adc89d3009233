"""The cline parser on Cline CLI 3.0.65's real output (tests/fixtures/agents/cline)."""

from __future__ import annotations

import json

from dispatcher.agents.output import AgentReport, parse_lines
from tests.agents import fixtures

OFFLINE = (
    "Cannot connect to API: Was there a typo in the url or port?: Was there a typo in the url "
    "or port? (FailedToOpenSocket)"
)


def test_a_real_successful_run_with_sdk_warnings_on_stderr() -> None:
    assert fixtures.parse("cline", "success-byok.jsonl") == AgentReport(
        summary="Added a line to README.md.",
        cost_usd=0.0,
        input_tokens=1200,
        output_tokens=9,
        turns=1,
        model="fake-model",
    )


def test_a_priced_run_with_a_tool_call() -> None:
    assert fixtures.parse("cline", "success-priced.jsonl") == AgentReport(
        summary="Added a line to README.md.",
        cost_usd=0.0213,
        input_tokens=2400 + 18000 + 1200,
        output_tokens=210,
        turns=2,
        model="anthropic/claude-sonnet-4.6",
    )


def test_a_real_run_with_no_network() -> None:
    report = fixtures.parse("cline", "no-login-offline.jsonl")
    assert report.is_error
    assert report.error == OFFLINE
    assert report.summary is None
    assert report.model == "aion-labs/aion-3.5"


def _line(kind: str, **fields: object) -> str:
    return json.dumps({"ts": "2026-12-02T04:40:00.000Z", "type": kind, **fields})


def test_an_error_before_any_run_fails() -> None:
    message = "JSON output mode requires a prompt argument or piped stdin (interactive mode is unsupported)"
    report = parse_lines("cline", [_line("error", message=message)])
    assert report.is_error
    assert report.error == message


def test_an_error_event_names_a_failure_the_result_does_not() -> None:
    lines = [
        _line("agent_event", event={"type": "error", "error": {"message": "401 Unauthorized"}}),
        _line("run_result", finishReason="error", iterations=1, text=""),
    ]
    assert parse_lines("cline", lines).error == "401 Unauthorized"


def test_an_aborted_run_fails() -> None:
    lines = [
        _line("run_result", finishReason="aborted", iterations=1, text=""),
        _line("run_aborted", reason="external_abort", message="run aborted"),
    ]
    report = parse_lines("cline", lines)
    assert report.is_error
    assert report.error == "run aborted"


def test_without_a_result_the_done_event_is_the_summary() -> None:
    lines = [_line("agent_event", event={"type": "done", "reason": "completed", "text": "Done."})]
    assert parse_lines("cline", lines) == AgentReport(summary="Done.")


def test_a_result_without_a_reason() -> None:
    report = parse_lines("cline", [_line("run_result", usage={"totalCost": "1"})])
    assert report.is_error
    assert report.error == "cline finished with no reason"
    assert report.cost_usd is None
