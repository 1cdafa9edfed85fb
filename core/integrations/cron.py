"""Cron expressions and time zones of pipeline schedules, checked before Temporal sees them.

Five fields (minute hour day-of-month month day-of-week) with `*`, lists, ranges, steps and the
month/day names, or one of the `@hourly`-style shorthands: the syntax GitHub Actions and Temporal
Schedules share. Time zones are IANA names known to this machine's tz database.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

SHORTHANDS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names counted from `lowest`)
FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")


class InvalidCron(ValueError):
    pass


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.isdigit() and len(text) <= 2:
        number = int(text)
    elif text in names:
        number = names.index(text) + low
    else:
        raise InvalidCron(f"{field}: {text!r} is not a value")
    if not low <= number <= high:
        raise InvalidCron(f"{field}: {number} is outside {low}-{high}")
    return number


def _check_field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        found = _ITEM.match(item)
        if found is None:
            raise InvalidCron(f"{field}: {item!r} is not a cron item")
        star, start, end, step = found.groups()
        if step is not None and not 1 <= int(step) <= high:
            raise InvalidCron(f"{field}: step {step} is outside 1-{high}")
        if star:
            continue
        first = _value(start, field, low, high, names)
        if end is not None and _value(end, field, low, high, names) < first:
            raise InvalidCron(f"{field}: range {item!r} runs backwards")


def validate_cron(expression: str) -> str:
    """The expression normalized (lower case, single spaces); InvalidCron naming the field."""
    text = " ".join(expression.lower().split())
    if text in SHORTHANDS:
        return text
    parts = text.split(" ")
    if len(parts) != len(FIELDS):
        raise InvalidCron(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
        )
    for part, (field, low, high, names) in zip(parts, FIELDS, strict=True):
        _check_field(part, field, low, high, names)
    return text


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(name: str) -> str:
    """An IANA zone name this machine knows; looked up in the list, never opened as a path."""
    if name in ("UTC", "Etc/UTC") or name in _zones():
        return name
    raise InvalidCron(f"unknown time zone {name[:64]!r}")
