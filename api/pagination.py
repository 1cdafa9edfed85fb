"""HTTP side of keyset pagination: the limit/cursor query parameters and the page envelope
(the cursor rules and the SQL are in core/queries.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Response
from pydantic import BaseModel

from core.queries import (
    after_cursor,
    check_storable_datetime,
    decode_cursor,
    encode_cursor,
    paginate,
)

__all__ = [
    "CursorParam",
    "LimitParam",
    "Page",
    "PageDep",
    "PageRequest",
    "after_cursor",
    "build_page",
    "check_storable_datetime",
    "created_field_key",
    "created_key",
    "decode_cursor",
    "encode_cursor",
    "json_page",
    "page_window",
    "paginate",
]

T = TypeVar("T")
Row = TypeVar("Row")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (1-{MAX_LIMIT}).")]
CursorParam = Annotated[
    str | None,
    Query(max_length=256, description="`next_cursor` from the previous page."),
]


@dataclass(frozen=True)
class PageRequest:
    """The page a list endpoint is asked for: after `cursor`, at most `limit` items."""

    cursor: str | None
    limit: int


def page_request(cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT) -> PageRequest:
    # A plain `def` on purpose, so FastAPI runs it in its thread pool: an `async def` saves the
    # thread hop (CPU per request) but measured worse under 100 concurrent clients (list
    # projects 0.57-0.62x of the bare app's req/s against 0.70-0.71x, bench/README.md).
    return PageRequest(cursor=cursor, limit=limit)


PageDep = Annotated[PageRequest, Depends(page_request)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def created_key(row: Any) -> tuple[datetime, uuid.UUID]:
    """The usual keyset of a list: (created_at, id) of a mapped row."""
    return row.created_at, row.id


def created_field_key(row: Any) -> tuple[datetime, uuid.UUID]:
    """The usual keyset of a list read as plain row data: its created_at and id fields."""
    return row["created_at"], row["id"]


def page_window(
    rows: Sequence[Row],
    limit: int,
    key: Callable[[Row], tuple[datetime, uuid.UUID]] = created_key,
) -> tuple[Sequence[Row], str | None]:
    """The rows shown (a query reads limit + 1 to learn whether more follow) and the cursor of
    the next page, None on the last one."""
    visible = rows[:limit]
    has_more = len(rows) > limit
    return visible, encode_cursor(*key(visible[-1])) if has_more and visible else None


def build_page(
    rows: Sequence[Row],
    *,
    limit: int,
    key: Callable[[Row], tuple[datetime, uuid.UUID]] = created_key,
    to_item: Callable[[Row], T],
) -> Page[T]:
    visible, next_cursor = page_window(rows, limit, key)
    return Page[T](items=[to_item(r) for r in visible], next_cursor=next_cursor)


def json_page(
    rows: Sequence[Row],
    *,
    limit: int,
    key: Callable[[Row], tuple[datetime, uuid.UUID]] = created_field_key,
    to_data: Callable[[Row], Mapping[str, Any]] | None = None,
    to_model: Callable[[Row], BaseModel] | None = None,
    page_model: type[Page[Any]],
) -> Response:
    """For hot lists: validate plain row data and serialise the page to JSON bytes in one
    pydantic-core pass, instead of building models in Python and having FastAPI walk them again.
    Declare `response_model=page_model` on the route so the OpenAPI document stays exact.
    `to_model` instead of `to_data`: items already built as the item model (from rows whose
    types the database guarantees), the page serialised without validating them again."""
    visible, next_cursor = page_window(rows, limit, key)
    if to_model is not None:
        page = page_model.model_construct(
            items=[to_model(r) for r in visible], next_cursor=next_cursor
        )
    else:
        assert to_data is not None, "json_page needs to_data or to_model"
        page = page_model.model_validate(
            {"items": [to_data(r) for r in visible], "next_cursor": next_cursor}
        )
    return Response(page.model_dump_json(), media_type="application/json")
