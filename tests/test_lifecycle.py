"""The job state machine, tested as a table over every (from, to) pair."""

from __future__ import annotations

import itertools

import pytest

from dispatcher.errors import InvalidState
from dispatcher.lifecycle import (
    ACTIVE,
    CLOSED,
    FINISHED,
    TERMINAL,
    TRANSITIONS,
    JobState,
    can_transition,
    transition,
)

S = JobState

# Written out by hand on purpose: a change to TRANSITIONS must change this too.
ALLOWED: dict[JobState, set[JobState]] = {
    S.QUEUED: {S.PREPARING, S.CANCELED, S.DISCARDED},
    S.PREPARING: {S.RUNNING, S.FAILED, S.CANCELED, S.QUEUED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELED, S.QUEUED},
    S.SUCCEEDED: {S.MERGED, S.DISCARDED},
    S.FAILED: {S.MERGED, S.DISCARDED},
    S.TIMED_OUT: {S.MERGED, S.DISCARDED},
    S.CANCELED: {S.MERGED, S.DISCARDED},
    S.MERGED: set(),
    S.DISCARDED: set(),
}

PAIRS = list(itertools.product(JobState, JobState))


def test_table_covers_every_state() -> None:
    assert set(ALLOWED) == set(JobState)
    assert set(TRANSITIONS) == set(JobState)
    assert len(PAIRS) == len(JobState) ** 2 == 81


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=lambda s: s.value)
def test_transition_table(current: JobState, target: JobState) -> None:
    expected = target in ALLOWED[current]
    assert can_transition(current, target) is expected
    if expected:
        assert transition(current, target) is target
    else:
        with pytest.raises(InvalidState) as info:
            transition(current, target)
        assert info.value.details == {"state": current.value, "target": target.value}
        assert current.value in info.value.message
        assert target.value in info.value.message


def test_no_state_moves_to_itself() -> None:
    for state in JobState:
        assert not can_transition(state, state)


def test_groups_are_disjoint_and_cover_all_states() -> None:
    assert {S.QUEUED, S.PREPARING, S.RUNNING} == ACTIVE
    assert {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELED} == FINISHED
    assert {S.MERGED, S.DISCARDED} == CLOSED
    assert not ACTIVE & FINISHED
    assert not ACTIVE & CLOSED
    assert not FINISHED & CLOSED
    assert set(JobState) == ACTIVE | FINISHED | CLOSED


def test_terminal_is_finished_or_closed() -> None:
    assert TERMINAL == FINISHED | CLOSED
    assert not TERMINAL & ACTIVE


@pytest.mark.parametrize("state", sorted(CLOSED), ids=lambda s: s.value)
def test_closed_states_have_no_exits(state: JobState) -> None:
    assert TRANSITIONS[state] == frozenset()
    for target in JobState:
        assert not can_transition(state, target)


@pytest.mark.parametrize("state", sorted(FINISHED), ids=lambda s: s.value)
def test_finished_states_never_become_active_again(state: JobState) -> None:
    # A retry is a new job; the finished one only gets closed.
    assert not TRANSITIONS[state] & ACTIVE


def test_states_are_strings_matching_their_database_values() -> None:
    assert [s.value for s in JobState] == [
        "queued",
        "preparing",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "canceled",
        "merged",
        "discarded",
    ]
    assert JobState("timed_out") is S.TIMED_OUT
    assert isinstance(S.RUNNING, str)
    assert str(S.RUNNING) == "running"
