"""Billing periods: calendar months in UTC, the unit every subscription is billed on."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# Billing periods Forgeline accepts anywhere (API, CLI, workflow inputs): months of these years.
# Bounded so every period has a start and an end a datetime can hold, and a typo such as 0001-01
# or 9999-12 is refused with a message instead of reaching the database.
FIRST_PERIOD_YEAR = 2000
LAST_PERIOD_YEAR = 2100
_PERIOD_TEXT = re.compile(r"([0-9]{4})-?([0-9]{2})")


@dataclass(frozen=True)
class Period:
    """A calendar month in UTC: every subscription is billed on calendar months."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse `YYYY-MM` (or `YYYYMM`) of a real month from FIRST_PERIOD_YEAR to
        LAST_PERIOD_YEAR; ValueError (with a message for the user) on anything else."""
        match = _PERIOD_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"period must be a month written YYYY-MM, got {str(text)[:40]!r}")
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise ValueError(f"period {text!r} names no month: the month is 01 to 12")
        if not FIRST_PERIOD_YEAR <= year <= LAST_PERIOD_YEAR:
            raise ValueError(
                f"period {text!r} is out of range: {FIRST_PERIOD_YEAR}-01 to {LAST_PERIOD_YEAR}-12"
            )
        return cls(year, month)

    @classmethod
    def containing(cls, moment: datetime) -> Period:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def compact(self) -> str:
        return f"{self.year:04d}{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def days(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)
