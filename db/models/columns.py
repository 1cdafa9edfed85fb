"""Shared column types and constraint builders: money, time, JSONB defaults, value checks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Numeric, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

# Money is exact: prices and totals in cents precision, metered unit prices/costs with four places.
MONEY = Numeric(12, 2)
PRECISE_MONEY = Numeric(12, 4)
QUANTITY = Numeric(18, 6)
# Per-unit prices can be tiny (per token, per request): eight decimal places.
UNIT_PRICE = Numeric(14, 8)
TZ_DATETIME = DateTime(timezone=True)


def check_in(column: str, values: Iterable[str], name: str | None = None) -> CheckConstraint:
    """A CHECK that `column` is one of `values` (statuses stay strings so they can evolve)."""
    quoted = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name or f"{column}_valid")


def json_object(name: str | None = None, *, nullable: bool = False) -> Mapped[dict[str, Any]]:
    """A JSONB object column defaulting to `{}` (`name` when the attribute name differs)."""
    if name is not None:
        return mapped_column(
            name, JSONB(), nullable=nullable, default=dict, server_default=text("'{}'::jsonb")
        )
    return mapped_column(
        JSONB(), nullable=nullable, default=dict, server_default=text("'{}'::jsonb")
    )


def json_array(name: str | None = None, *, nullable: bool = False) -> Mapped[list[Any]]:
    """A JSONB array column defaulting to `[]`."""
    if name is not None:
        return mapped_column(
            name, JSONB(), nullable=nullable, default=list, server_default=text("'[]'::jsonb")
        )
    return mapped_column(
        JSONB(), nullable=nullable, default=list, server_default=text("'[]'::jsonb")
    )


def created_at_column() -> Mapped[datetime]:
    """For append-only rows that never change after insert."""
    return mapped_column(TZ_DATETIME, nullable=False, server_default=func.now())
