"""Query helpers every repository shares: keyset (cursor) pagination over (sort key, id),
newest first, and Core statements run on the session's own connection."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Executable, Select, tuple_

from core.driver import HeldConnection, ReadSource
from forgeline.errors import ValidationFailed


async def core_execute(
    session: ReadSource, stmt: Executable, params: Mapping[str, Any] | None = None
) -> CursorResult[Any]:
    """Run a Core statement on the session's connection (same transaction as the session),
    skipping the ORM Session.execute path: hot reads pay for neither ORM compile state nor
    identity-map bookkeeping they do not use. A bare read connection runs it as is."""
    if isinstance(session, HeldConnection):
        return await session.connection.execute(stmt, dict(params) if params is not None else None)
    connection = await session.connection()
    return await connection.execute(stmt, dict(params) if params is not None else None)


def check_storable_datetime(value: datetime) -> datetime:
    """Refuse instants Postgres/asyncpg cannot take (e.g. year 1 at +14:00 overflows in UTC)."""
    as_utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not 1900 <= as_utc.year <= 9999:
        raise ValueError("timestamp out of range")
    return value


def encode_cursor(sort_value: datetime, row_id: uuid.UUID) -> str:
    payload = json.dumps([sort_value.isoformat(), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (sort key, id) a cursor points after; anything forged or garbled is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        sort_raw, id_raw = raw
        sort_value = datetime.fromisoformat(sort_raw)
        if sort_value.tzinfo is None:
            raise ValueError("naive timestamp")
        check_storable_datetime(sort_value)
        return sort_value, uuid.UUID(id_raw)
    except (
        ValueError,
        TypeError,
        OverflowError,
        binascii.Error,
        UnicodeError,
        json.JSONDecodeError,
    ) as exc:
        raise ValidationFailed("invalid pagination cursor", field="cursor") from exc


def after_cursor(sort_col: Any, id_col: Any, cursor: str | None) -> ColumnElement[bool] | None:
    """Rows strictly after the cursor in (sort_col DESC, id_col DESC) order.

    A row comparison, not `a < x OR (a = x AND id < y)`: Postgres uses the row form as one
    index condition on a (tenant, sort_col, id) btree, so deep pages cost the same as page one.
    """
    if cursor is None:
        return None
    sort_value, row_id = decode_cursor(cursor)
    return tuple_(sort_col, id_col) < tuple_(sort_value, row_id)


def paginate(
    stmt: Select[Any], sort_col: Any, id_col: Any, *, cursor: str | None, limit: int
) -> Select[Any]:
    """Apply cursor, stable order and limit+1 (the extra row tells whether a next page exists)."""
    condition = after_cursor(sort_col, id_col, cursor)
    if condition is not None:
        stmt = stmt.where(condition)
    return stmt.order_by(sort_col.desc(), id_col.desc()).limit(limit + 1)
