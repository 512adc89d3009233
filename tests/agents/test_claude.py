"""Claude Code's parser on what the real CLI printed (tests/fixtures/agents/claude), and its
root refusal: when it applies, when an override drops it, and the user's opt-in."""

from __future__ import annotations

import json
import os

import pytest

from dispatcher.agents.builtin.claude import PROFILE, ROOT_OPT_IN
from dispatcher.agents.output import parse_lines
from dispatcher.agents.profiles import resolve_profile
from dispatcher.agents.report import AgentReport
from dispatcher.errors import InvalidInput
from dispatcher.jobs.invocation import check_can_start
from tests.agents import fixtures

UNKNOWN = "11111111-2222-3333-4444-555555555555"


def test_not_logged_in_is_an_error_with_claudes_own_words() -> None:
    report = fixtures.parse("claude", "not-logged-in.jsonl")
    assert report.is_error
    assert report.error == "Not logged in · Please run /login"
    assert (
        report.session_id
        == json.loads(fixtures.lines("claude", "not-logged-in.jsonl")[0])["session_id"]
    )
    assert report.model == "claude-opus-5-5"  # init's; the assistant's is "<synthetic>"
    assert (report.cost_usd, report.turns, report.input_tokens, report.output_tokens) == (
        0,
        1,
        0,
        0,
    )


def test_a_resumed_session_keeps_its_id() -> None:
    first = fixtures.parse("claude", "not-logged-in.jsonl")
    resumed = fixtures.parse("claude", "resume-not-logged-in.jsonl")
    assert resumed.session_id == first.session_id
    assert resumed.error == "Not logged in · Please run /login"


def test_resuming_an_unknown_session_names_it() -> None:
    report = fixtures.parse("claude", "resume-unknown-session.jsonl")
    assert report.is_error
    # The result carries no text: the error is its ``errors`` list.
    assert report.error == "No conversation found with session ID: " + UNKNOWN
    assert report.session_id == UNKNOWN


def test_no_network_with_a_key_is_only_retries_until_the_timeout() -> None:
    report = fixtures.parse("claude", "no-network-api-key.jsonl")
    assert not report.is_error  # no result yet: the job's timeout ends it
    assert report.session_id is not None


def test_success_reports_summary_cost_tokens_turns() -> None:
    report = fixtures.parse("claude", "success.jsonl")
    assert report == AgentReport(
        summary="Added a line to README.md.",
        cost_usd=0.011439999999999999,
        input_tokens=2400,
        output_tokens=92,
        turns=2,
        session_id="929a1330-3a8e-4f5b-a667-4df4b0924873",
        model="claude-opus-5-5",
    )


def test_cached_input_counts_as_input() -> None:
    *events, last = fixtures.text("claude", "success.jsonl").splitlines()
    result = json.loads(last)
    result["usage"].update(cache_creation_input_tokens=300, cache_read_input_tokens=1100)
    report = parse_lines("claude", [*events, json.dumps(result)])
    assert report.input_tokens == 2400 + 300 + 1100


def test_max_budget_is_an_error_with_its_reason() -> None:
    report = fixtures.parse("claude", "max-budget.jsonl")
    assert report.is_error
    assert report.error == "Reached maximum budget ($0.001)"
    assert report.cost_usd == 0.0063999999999999994
    assert report.summary == "I'll add the line."  # the last text before it stopped


def test_a_cut_off_run_keeps_the_session_and_last_text() -> None:
    report = parse_lines("claude", fixtures.lines("claude", "success.jsonl")[:3])
    assert (report.summary, report.is_error) == ("I'll add the line.", False)
    assert report.session_id == "929a1330-3a8e-4f5b-a667-4df4b0924873"


def test_the_refusal_text_is_what_the_cli_refuses() -> None:
    assert (
        "cannot be used with root/sudo privileges"
        in fixtures.lines("claude", "root-refusal.txt")[0]
    )
    assert PROFILE.root_refusal is not None and "\n" not in PROFILE.root_refusal
    assert ROOT_OPT_IN in PROFILE.root_refusal
    assert "requires --verbose" in fixtures.lines("claude", "stream-json-without-verbose.txt")[0]


@pytest.mark.parametrize(
    ("argv", "refuses"),
    [
        ("claude -p --output-format stream-json --verbose --model opus "
         "--permission-mode bypassPermissions", True),
        ("claude -p --dangerously-skip-permissions", True),
        ("claude -p --permission-mode=bypassPermissions", True),
        ("claude -p --allow-dangerously-skip-permissions", True),
        ("claude -p --output-format stream-json --verbose --permission-mode acceptEdits", False),
        ("claude -p --output-format stream-json --verbose --permission-mode auto", False),
        ("claude -p --output-format stream-json --verbose", False),
    ],
)  # fmt: skip
def test_an_override_keeps_the_refusal_only_with_a_refusing_flag(argv: str, refuses: bool) -> None:
    profile = resolve_profile("claude", {"claude": argv})
    assert profile.root_refusal == (PROFILE.root_refusal if refuses else None)
    assert profile.root_opt_in == (ROOT_OPT_IN, "CLAUDE_CODE_BUBBLEWRAP")


def test_check_can_start_refuses_as_root_unless_the_user_opted_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(InvalidInput) as info:
        check_can_start(PROFILE, boxed=True, environ={})
    assert info.value.message == PROFILE.root_refusal
    with pytest.raises(InvalidInput):
        check_can_start(PROFILE, boxed=True, environ={"IS_SANDBOX": "0"})
    note = check_can_start(PROFILE, boxed=True, environ={"IS_SANDBOX": "1"})
    assert note == "running as root: IS_SANDBOX=1 is set, the agent's own opt-in"
    with pytest.raises(InvalidInput):  # Claude itself refuses it too
        check_can_start(PROFILE, boxed=True, environ={"IS_SANDBOX": "yes"})
    note = check_can_start(PROFILE, boxed=True, environ={"CLAUDE_CODE_BUBBLEWRAP": "1"})
    assert note == "running as root: CLAUDE_CODE_BUBBLEWRAP is set, the agent's own opt-in"
    with pytest.raises(InvalidInput):
        check_can_start(PROFILE, boxed=True, environ={"CLAUDE_CODE_BUBBLEWRAP": ""})
    without = resolve_profile("claude", {"claude": "claude -p --permission-mode acceptEdits"})
    assert check_can_start(without, boxed=True, environ={}) is None


def test_check_can_start_lets_a_normal_user_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert check_can_start(PROFILE, boxed=True, environ={}) is None


def test_auto_mode_as_root_runs_and_reports_like_bypass_mode() -> None:
    report = fixtures.parse("claude", "permission-mode-auto-as-root.jsonl")
    assert (report.is_error, report.summary, report.turns) == (
        False,
        "Added a line to README.md.",
        2,
    )
