"""The aider parser on aider's text (tests/fixtures/agents/aider: real aider 0.86.2 runs,
with no key, no network, and against a local stand-in for an OpenAI-compatible API)."""

from __future__ import annotations

import pytest

from dispatcher.agents.output import AgentReport, parse_lines
from tests.agents import fixtures

NO_KEY = (
    "litellm.AuthenticationError: Missing Anthropic API Key - A call is being made to "
    "anthropic but no key is set either in the environment variables or via params. "
    "Please set `ANTHROPIC_API_KEY` in your environment vars"
)
NO_NETWORK = (
    "litellm.InternalServerError: AnthropicException - [Errno -2] Name or service not "
    "known. Handle with `litellm.InternalServerError`."
)


def lines(text: str) -> AgentReport:
    return parse_lines("aider", text.split("\n"))


def test_a_successful_run() -> None:
    report = fixtures.parse("aider", "success.txt")
    assert report.is_error is False
    assert (report.cost_usd, report.input_tokens, report.output_tokens) == (0.01, 2500, 301)
    assert (report.turns, report.model) == (1, "openai/stub-model")
    assert report.summary is not None
    assert report.summary.endswith(
        "Tokens: 2.5k sent, 301 received. Cost: $0.01 message, $0.01 session.\n"
        "Applied edit to README.md"
    )


def test_two_replies_add_up_and_the_cost_is_the_session_total() -> None:
    """An edit that failed to apply makes aider send a second message (a reflection)."""
    report = fixtures.parse("aider", "success-two-replies.txt")
    assert report.is_error is False
    assert (report.turns, report.input_tokens, report.output_tokens) == (2, 5000, 602)
    assert report.cost_usd == 0.02  # the last "session" figure, not a sum of them


def test_a_retried_error_followed_by_a_reply_is_no_failure() -> None:
    report = fixtures.parse("aider", "retried-then-success.txt")
    assert (report.is_error, report.error, report.turns) == (False, None, 1)
    assert report.cost_usd == 0.01


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no-key.txt", NO_KEY),
        ("conformance-no-key.log", NO_KEY),
        ("no-network.txt", NO_NETWORK),
        (
            "bad-key.txt",
            "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API "
            "key provided: stub-key. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        ),
        (
            "no-model-browser-login.txt",
            "No LLM model was specified and no API keys were provided.",
        ),
        (
            "read-only-git-config.txt",
            "aider crashed: OSError: [Errno 30] Read-only file system: '/tmp/ap/repo/.git/config'",
        ),
    ],
)
def test_a_run_that_got_no_reply_is_a_failure(name: str, reason: str) -> None:
    report = fixtures.parse("aider", name)
    assert report.is_error is True
    assert report.error == reason
    assert (report.turns, report.cost_usd) == (None, None)


def test_the_model_is_read_from_the_announcement() -> None:
    assert fixtures.parse("aider", "no-key.txt").model == "claude-sonnet-4-5"
    assert fixtures.parse("aider", "no-network.txt").model == "claude-sonnet-4-5"


def test_cache_figures_and_cost_on_the_next_line() -> None:
    """``calculate_and_show_tokens_and_cost`` puts the cost on a line of its own when it
    shows both cache figures; counts of 10k and more are rounded to thousands."""
    report = lines(
        "Tokens: 12k sent, 1.2k cache write, 3.4k cache hit, 300 received.\n"
        "Cost: $0.05 message, $0.12 session."
    )
    assert (report.input_tokens, report.output_tokens, report.turns) == (12000, 300, 1)
    assert report.cost_usd == 0.12


def test_small_costs_keep_their_digits_and_a_model_without_prices_has_none() -> None:
    report = lines(
        "Tokens: 999 sent, 1.0k received. Cost: $0.00042 message, $0.0012 session.\n"
        "Tokens: 50 sent, 7 received."
    )
    assert (report.input_tokens, report.output_tokens, report.turns) == (1049, 1007, 2)
    assert report.cost_usd == 0.0012
    assert lines("Tokens: 2.5k sent, 300 received.").cost_usd is None


def test_an_error_after_the_last_reply_fails_the_run() -> None:
    report = lines(
        "Tokens: 2.5k sent, 300 received. Cost: $0.01 message, $0.01 session.\n"
        "litellm.RateLimitError: rate limited\n"
        "The API provider has rate limited you. Try again later or check your quotas.\n"
        "Retrying in 0.2 seconds...\n"
        "litellm.BadRequestError: AnthropicException - prompt is too long"
    )
    assert report.is_error is True
    assert report.error == "litellm.BadRequestError: AnthropicException - prompt is too long"
    assert (report.turns, report.cost_usd) == (1, 0.01)  # what was spent still counts


def test_the_last_run_in_a_log_wins() -> None:
    first = fixtures.text("aider", "no-key.txt")
    second = fixtures.text("aider", "success.txt")
    report = lines(first + "\n" + second)
    assert (report.is_error, report.turns, report.model) == (False, 1, "openai/stub-model")
    again = lines(second + "\n" + first)
    assert (again.is_error, again.error, again.turns) == (True, NO_KEY, None)


@pytest.mark.parametrize(
    "text",
    [
        "Tokens: lots sent, 3 received.",
        "Tokens: 2.5k sent",
        "Cost: $x message, $y session.",
        "litellm is a library",
        "# Uncaught",
        "Model: ",
        "\x1b[31mTokens: 1..5k sent, 3 received.\x1b[0m",
    ],
)
def test_lines_that_only_look_like_aider_s_are_plain_text(text: str) -> None:
    plain = text.replace("\x1b[31m", "").replace("\x1b[0m", "").strip()
    assert lines(text) == AgentReport(summary=plain)


def test_ansi_colours_do_not_hide_a_line() -> None:
    report = lines("\x1b[38;2;255;34;34mlitellm.APIConnectionError: boom\x1b[0m")
    assert (report.is_error, report.error) == (True, "litellm.APIConnectionError: boom")
