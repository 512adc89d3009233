"""Cron expressions and fire times, pure: nothing here sleeps or reads the time.

The schedules that run them (APScheduler, with an injected clock) are tested in
``tests/test_schedules.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatcher.errors import InvalidInput
from triggers.schedule import latest_due, next_fire, parse_cron


def at(text: str) -> datetime:
    """'2024-03-09 23:59' (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- next_fire -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2024-01-01 10:00", "2024-01-01 10:01"),  # strictly after
        ("* * * * *", "2024-01-01 10:00:30", "2024-01-01 10:01"),
        ("* * * * *", "2024-01-01 10:00:59.999999", "2024-01-01 10:01"),
        ("0 * * * *", "2024-01-01 10:00", "2024-01-01 11:00"),
        ("0 * * * *", "2024-01-01 10:59:59", "2024-01-01 11:00"),
        ("*/15 * * * *", "2024-01-01 10:07", "2024-01-01 10:15"),
        ("0 3 * * *", "2024-01-01 23:30", "2024-01-02 03:00"),  # across midnight
        ("0 3 * * *", "2024-12-31 04:00", "2025-01-01 03:00"),  # across a year
        ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),  # leap days only
        # Day-of-week numbers are crontab's: 0 and 7 are Sunday, 1 is Monday.
        # 2024-01-01 is a Monday.
        ("0 9 * * 0", "2024-01-01 00:00", "2024-01-07 09:00"),
        ("0 9 * * 7", "2024-01-01 00:00", "2024-01-07 09:00"),
        ("0 9 * * 1", "2024-01-01 10:00", "2024-01-08 09:00"),
        ("0 9 * * 1-5", "2024-01-05 10:00", "2024-01-08 09:00"),  # Friday → Monday
        ("0 9 * * 6", "2024-01-01 00:00", "2024-01-06 09:00"),
        ("0 9 * * 5-7", "2024-01-06 10:00", "2024-01-07 09:00"),
        ("0 9 * * */2", "2024-01-01 00:00", "2024-01-02 09:00"),  # Sun, Tue, Thu, Sat
        ("0 9 * * sun", "2024-01-01 00:00", "2024-01-07 09:00"),
        ("0 9 * * MON-FRI", "2024-01-06 00:00", "2024-01-08 09:00"),
        ("0 9 * * 1,3", "2024-01-01 10:00", "2024-01-03 09:00"),
    ],
)
def test_next_fire(expr: str, after: str, expected: str) -> None:
    assert next_fire(expr, at(after)) == at(expected)


def test_next_fire_is_utc_whatever_the_input_zone() -> None:
    """UTC only: a 03:00 schedule is 03:00 UTC, also across a US DST change."""
    new_york_winter = timezone(timedelta(hours=-5))
    after = datetime(2024, 3, 9, 20, 0, tzinfo=new_york_winter)  # 2024-03-10 01:00 UTC
    fire = next_fire("0 3 * * *", after)
    assert fire == at("2024-03-10 03:00")
    assert fire.utcoffset() == timedelta(0)
    # On the DST day, consecutive daily fires are exactly 24 hours apart.
    assert next_fire("0 3 * * *", fire) - fire == timedelta(hours=24)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire("* * * * *", datetime(2024, 1, 1))


# --- latest_due ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "last", "now", "expected"),
    [
        ("* * * * *", "2024-01-01 10:00", "2024-01-01 10:00:59", None),  # not yet
        ("* * * * *", "2024-01-01 10:00", "2024-01-01 10:01", "2024-01-01 10:01"),  # on the dot
        ("* * * * *", "2024-01-01 10:00", "2024-01-01 10:01:30", "2024-01-01 10:01"),
        ("* * * * *", "2024-01-01 10:01", "2024-01-01 10:01:30", None),  # last is excluded
        ("0 * * * *", "2024-01-01 10:00", "2024-01-01 10:59", None),
        ("0 * * * *", "2024-01-01 10:00", "2024-01-01 13:20", "2024-01-01 13:00"),
        ("0 3 * * *", "2024-01-01 23:00", "2024-01-02 02:59", None),
        ("0 3 * * *", "2024-01-01 23:00", "2024-01-02 03:00", "2024-01-02 03:00"),
        # A 5-hour sleep: 300 missed minutes coalesce into the latest one.
        ("* * * * *", "2024-01-01 22:00", "2024-01-02 03:00:10", "2024-01-02 03:00"),
        ("*/7 * * * *", "2024-01-01 22:00", "2024-01-02 02:59", "2024-01-02 02:56"),
        # A month away with an every-minute schedule (the search gallops, not crawls).
        ("* * * * *", "2024-01-01 00:00", "2024-02-01 12:34:56", "2024-02-01 12:34"),
        # Sparse schedules far back.
        ("0 0 1 1 *", "2020-06-01 00:00", "2024-06-01 00:00", "2024-01-01 00:00"),
        ("* 3 * * *", "2024-01-01 00:00", "2024-01-05 04:30", "2024-01-05 03:59"),
        # The clock went backwards: nothing is due.
        ("* * * * *", "2024-01-01 10:00", "2024-01-01 09:00", None),
    ],
)
def test_latest_due(expr: str, last: str, now: str, expected: str | None) -> None:
    assert latest_due(expr, at(last), at(now)) == (None if expected is None else at(expected))


def test_latest_due_agrees_with_stepping_through_every_fire() -> None:
    """The galloping search finds what walking fire by fire finds."""
    last = at("2024-01-01 00:00")
    for expr in ("*/13 * * * *", "5 */3 * * *", "30 2 * * 1-5", "* 3 * * 0"):
        for hours in (0, 1, 2, 5, 25, 24 * 9 + 7):
            now = last + timedelta(hours=hours, minutes=17)
            walked = None
            fire = next_fire(expr, last)
            while fire <= now:
                walked = fire
                fire = next_fire(expr, fire)
            assert latest_due(expr, last, now) == walked, (expr, hours)


# --- parse_cron ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "got 4 fields, expected 5 fields"),
        ("* * * * * *", "got 6 fields"),
        ("", "got 0 fields"),
        ("61 * * * *", r"^invalid cron expression '61 \* \* \* \*': .*\(59\); expected 5"),
        ("* 24 * * *", "higher than the maximum"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("* * * 13 *", "higher than the maximum"),
        ("* * * * 8", "invalid day-of-week '8'.*0 and 7 are Sunday"),
        ("* * * * funday", "invalid day-of-week 'funday'"),
        ("* * * * 5-1", "invalid day-of-week range '5-1'"),
        ("* * * * */0", "invalid step in day-of-week"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 1 * 1", "day-of-month and day-of-week are both restricted"),
        ("@daily", "got 1 fields"),
    ],
)
def test_invalid_cron_expressions(expr: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_cron(expr)


def test_invalid_cron_in_next_fire_and_latest_due() -> None:
    with pytest.raises(InvalidInput):
        next_fire("nope", at("2024-01-01 00:00"))
    with pytest.raises(InvalidInput):
        latest_due("* *", at("2024-01-01 00:00"), at("2024-01-02 00:00"))


def test_day_restrictions_that_are_not_ambiguous_are_accepted() -> None:
    parse_cron("0 0 1 * *")
    parse_cron("0 0 * * 1")
    parse_cron("0 0 */2 * *")
    parse_cron("0 0 1 * */1")  # a "*"-led day-of-week restricts nothing extra in crontab
