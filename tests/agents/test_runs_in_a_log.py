"""A job log holds more than the agent's output: ``setup:`` writes into it first, and an
attempt the daemon started again follows an earlier one. Only the agent's own run, after
the runner's agent-start note, is read."""

from __future__ import annotations

import pytest

from dispatcher.agents.output import agent_start, parse_lines
from tests.agents.fixtures import lines, parse

SETUP = [
    "[dispatcher] setup: npm ci",
    "error: pathspec 'x' did not match any file(s) known to git",
    "Error: Cannot find module 'left-pad'",
    "litellm.AuthenticationError: a line setup printed",
    "[dispatcher] setup: done",
]


@pytest.mark.parametrize(
    ("agent", "fixture"),
    [("goose", "success-local-stub.txt"), ("codex", "success.jsonl"), ("aider", "success.txt")],
)
def test_setup_output_before_the_agent_starts_is_not_the_agents_failure(
    agent: str, fixture: str
) -> None:
    alone = parse(agent, fixture)
    assert not alone.is_error
    start = f"[dispatcher] {agent_start(agent, [agent, '--flag'])}"
    report = parse_lines(agent, [*SETUP, start, *lines(agent, fixture)])
    assert report == alone
    # Without the note, setup's lines count (a failure, or aider's summary): the note matters.
    assert parse_lines(agent, [*SETUP, *lines(agent, fixture)]) != alone


def test_the_last_start_is_the_run_that_counts() -> None:
    start = f"[dispatcher] {agent_start('goose', ['goose', 'run'])}"
    failed = lines("goose", "no-provider.txt")
    succeeded = lines("goose", "success-local-stub.txt")
    assert parse_lines("goose", [start, *failed, start, *succeeded]) == parse(
        "goose", "success-local-stub.txt"
    )
    assert parse_lines("goose", [start, *succeeded, start, *failed]).is_error
