"""Durations as people type them (``7d``, ``12h``, ``1d12h``, ``90m``, ``2w``). Pure.

The grammar, whole and case-insensitive::

    duration := part+
    part     := digits [ "." digits ] unit
    unit     := "s" | "m" | "h" | "d" | "w"   (seconds, minutes, hours, days, weeks)

No spaces, signs or exponents; each unit at most once, largest first; the total must be
more than zero. Anything else is refused with a :class:`ValueError` saying what is
accepted, so a CLI option and a request body can both report it.
"""

from __future__ import annotations

import re

UNITS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
HELP = "a number and a unit: s, m, h, d or w (e.g. 90m, 12h, 7d, 1d12h)"


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (see the module's grammar); ValueError if it is not one."""
    lowered = text.strip().lower()
    parts = _PART.findall(lowered)
    units = [unit for _, unit in parts]
    order = list(UNITS)
    if (
        not parts
        or "".join(number + unit for number, unit in parts) != lowered
        or len(set(units)) != len(units)
        or units != sorted(units, key=order.index)
    ):
        raise ValueError(f"not a duration: {text!r}; give {HELP}")
    seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be more than zero: {text!r}")
    return seconds


def describe_age(seconds: float) -> str:
    """A short age for listings: ``45s``, ``12m``, ``5h``, ``3d``."""
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit]:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{max(0, int(seconds))}s"
