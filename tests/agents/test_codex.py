"""Codex's parser on what the real CLI printed (tests/fixtures/agents/codex)."""

from __future__ import annotations

import json

from dispatcher.agents.output import parse_lines
from dispatcher.agents.report import AgentReport
from tests.agents import fixtures

NO_NETWORK = "Connection failed: error sending request"


def thread_id(name: str) -> str:
    return str(json.loads(fixtures.lines("codex", name)[0])["thread_id"])


def test_no_network_fails_with_the_last_reason() -> None:
    report = fixtures.parse("codex", "no-network.jsonl", "no-network.stderr.txt")
    assert report == AgentReport(
        is_error=True, error=NO_NETWORK, turns=1, session_id=thread_id("no-network.jsonl")
    )


def test_a_resumed_thread_keeps_its_id() -> None:
    report = fixtures.parse("codex", "resume-no-network.jsonl")
    assert report.session_id == thread_id("no-network.jsonl")
    assert report.error == NO_NETWORK


def test_waiting_for_network_is_an_error_while_it_lasts() -> None:
    # What a job without --disable unbounded_connection_retries printed until it was killed.
    report = fixtures.parse("codex", "no-network-unbounded-retries.jsonl")
    assert report.is_error
    assert report.error is not None and "waiting for network" in report.error


def test_an_error_line_on_stderr_is_the_failure() -> None:
    report = fixtures.parse("codex", "resume-unknown-session.txt")
    assert report.is_error
    assert report.error == (
        "codex: thread/resume: thread/resume failed: no rollout found for thread id "
        "01a234fe-9c7d-7f72-a169-29e511ab16f9 (code -32600)"
    )
    assert report.summary is not None and report.summary.startswith("WARNING: proceeding")


def test_a_json_failure_wins_over_an_error_line() -> None:
    report = parse_lines(
        "codex", [*fixtures.lines("codex", "no-network.jsonl"), "Error: something else"]
    )
    assert report.error == NO_NETWORK


def test_success_reports_summary_tokens_turns_session() -> None:
    report = fixtures.parse("codex", "success.jsonl")
    assert report.summary == "Added a line to README.md."
    assert (report.input_tokens, report.output_tokens, report.turns) == (2300, 52, 1)
    assert report.session_id == thread_id("success.jsonl")
    assert (report.is_error, report.cost_usd, report.model) == (False, None, None)  # no cost


def test_commands_failing_in_codexs_sandbox_show_nowhere_in_the_events() -> None:
    # As root inside the daemon's box every command fails ("bwrap: setting up uid map:
    # Operation not permitted", in what codex sent its model), yet the events are
    # those of a success: nothing the parser could read (docs/agents/codex.md).
    report = fixtures.parse("codex", "root-in-daemon-sandbox.jsonl")
    assert (report.is_error, report.summary) == (False, "Added a line to README.md.")
    told = fixtures.text("codex", "root-in-daemon-sandbox.tool-output.json")
    assert "bwrap: setting up uid map: Operation not permitted" in told


def test_a_retry_then_a_completed_turn_is_a_success() -> None:
    retried = [
        fixtures.lines("codex", "no-network.jsonl")[2],
        *fixtures.lines("codex", "success.jsonl")[1:],
    ]
    report = parse_lines("codex", retried)
    assert (report.is_error, report.error, report.summary) == (
        False,
        None,
        "Added a line to README.md.",
    )
