"""Keyset (cursor) pagination: opaque base64 cursors over (sort key, id), newest first."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Response
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, tuple_

from forgeline.errors import ValidationFailed

T = TypeVar("T")
Row = TypeVar("Row")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (1-{MAX_LIMIT}).")]
CursorParam = Annotated[
    str | None,
    Query(max_length=256, description="`next_cursor` from the previous page."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


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


def build_page(
    rows: Sequence[Row],
    *,
    limit: int,
    key: Callable[[Row], tuple[datetime, uuid.UUID]],
    to_item: Callable[[Row], T],
) -> Page[T]:
    has_more = len(rows) > limit
    visible = rows[:limit]
    next_cursor = encode_cursor(*key(visible[-1])) if has_more and visible else None
    return Page[T](items=[to_item(r) for r in visible], next_cursor=next_cursor)


def json_page(
    rows: Sequence[Row],
    *,
    limit: int,
    key: Callable[[Row], tuple[datetime, uuid.UUID]],
    to_data: Callable[[Row], Mapping[str, Any]],
    page_model: type[Page[Any]],
) -> Response:
    """For hot lists: validate plain row data and serialise the page to JSON bytes in one
    pydantic-core pass, instead of building models in Python and having FastAPI walk them again.
    Declare `response_model=page_model` on the route so the OpenAPI document stays exact."""
    has_more = len(rows) > limit
    visible = rows[:limit]
    next_cursor = encode_cursor(*key(visible[-1])) if has_more and visible else None
    page = page_model.model_validate(
        {"items": [to_data(r) for r in visible], "next_cursor": next_cursor}
    )
    return Response(page.model_dump_json(), media_type="application/json")
