"""Cron schedules → ``schedule`` events, pure, with the clock passed in.

Expressions are 5-field crontab (minute hour day-of-month month day-of-week)
evaluated in UTC, so there is no daylight-saving gap or repeat. They are
parsed with APScheduler 3.x's :class:`CronTrigger`, with two fixes for
crontab fidelity:

- day-of-week numbers mean what they mean in crontab (0 and 7 are Sunday,
  1 is Monday); APScheduler 3.x alone reads 0 as Monday;
- restricting both day-of-month and day-of-week is refused: crontab fires
  when *either* matches, APScheduler only when both do. Two schedules, one
  for each field, say it unambiguously.

Nothing here sleeps or reads the clock: every function takes the times it
needs. The daemon runs the schedules on APScheduler's scheduler
(``dispatcher/events/schedules.py``), which asks these functions when a line
fires next and, after missed fire times, which is the latest one due
(:func:`latest_due`: they coalesce into one event, for the latest).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from dispatcher.errors import InvalidInput
from triggers.events import Event

_FORMAT = "expected 5 fields 'minute hour day-of-month month day-of-week', evaluated in UTC"
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MAX_KEY = 300  # Event.dedup_key's limit
_TICK = timedelta(microseconds=1)


# --- expressions ------------------------------------------------------------------


def parse_cron(expr: str) -> CronTrigger:
    """A UTC :class:`CronTrigger` for a 5-field crontab expression; InvalidInput if invalid."""
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidInput(f"invalid cron expression {expr!r}: got {len(fields)} fields, {_FORMAT}")
    minute, hour, day, month, weekday = fields
    if not day.startswith("*") and not weekday.startswith("*"):
        raise InvalidInput(
            f"invalid cron expression {expr!r}: day-of-month and day-of-week are both "
            "restricted; crontab fires when either matches, which is ambiguous here: "
            "use two schedules, one with each field"
        )
    try:
        trigger = CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_crontab_weekdays(weekday),
            timezone=UTC,
        )
    except ValueError as exc:
        raise InvalidInput(f"invalid cron expression {expr!r}: {exc}; {_FORMAT}") from exc
    if _next(trigger, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise InvalidInput(f"invalid cron expression {expr!r}: it never fires")
    return trigger


def _crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday, names, ranges, steps) as APScheduler names."""
    days: set[int] = set()
    for item in field.lower().split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"invalid step in day-of-week {item!r}")
            step = int(step_text)
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _weekday(first, item), _weekday(last, item)
        else:
            low = _weekday(span, item)
            high = 7 if slash else low  # "1/2": from Monday to the end of the week
        if low > high:
            raise ValueError(f"invalid day-of-week range {item!r}: {low} is after {high}")
        days.update(day % 7 for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def _weekday(text: str, item: str) -> int:
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(
        f"invalid day-of-week {item!r}: use 0-7 (0 and 7 are Sunday) or sun, mon, ... sat"
    )


def _trigger(expr: str | CronTrigger) -> CronTrigger:
    return parse_cron(expr) if isinstance(expr, str) else expr


def _utc(when: datetime, name: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {when!r}")
    return when.astimezone(UTC)


def _next(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (None: never again)."""
    fire: datetime | None = trigger.get_next_fire_time(None, after + _TICK)
    return None if fire is None else fire.astimezone(UTC)


def next_fire(expr: str | CronTrigger, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (UTC)."""
    trigger = _trigger(expr)
    fire = _next(trigger, _utc(after, "after"))
    if fire is None:
        raise InvalidInput(f"cron expression {expr!r} never fires after {after.isoformat()}")
    return fire


def latest_due(expr: str | CronTrigger, last: datetime, now: datetime) -> datetime | None:
    """The latest fire time ``t`` with ``last < t <= now``, or None.

    Many missed fire times (a laptop asleep for hours) coalesce into this one.
    The search gallops back from ``now`` in doubling windows, so a long gap
    with a frequent schedule costs a few dozen steps, not one per missed fire.
    """
    trigger = _trigger(expr)
    last, now = _utc(last, "last"), _utc(now, "now")
    first = _next(trigger, last)
    if first is None or first > now:
        return None
    window = timedelta(minutes=1)
    while True:
        start = max(last, now - window)
        found = _next(trigger, start)
        if found is not None and found <= now:
            break
        window *= 2  # ends: once start == last, found == first <= now
    while (later := _next(trigger, found)) is not None and later <= now:
        found = later
    return found


# --- events -----------------------------------------------------------------------


def dedup_key(repo_name: str, cron: str, fire: datetime) -> str:
    """``schedule:{repo}:{cron}:{fire ISO}``; hashed when longer than an Event allows."""
    key = f"schedule:{repo_name}:{cron}:{fire.isoformat()}"
    if len(key) <= _MAX_KEY:
        return key
    return f"schedule:{repo_name[:120]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def schedule_event(repo_name: str, cron: str, fire: datetime) -> Event:
    """The ``schedule`` event of ``repo_name``'s ``cron`` line coming due at ``fire``."""
    payload: dict[str, Any] = {
        "schedule": cron,
        "fired_at": fire.isoformat(),
        "repository": {"name": repo_name, "full_name": repo_name},
    }
    return Event(
        kind="schedule",
        source="local",
        dedup_key=dedup_key(repo_name, cron, fire),
        repo=repo_name,
        payload=payload,
        schedule=cron,
    )
