"""Usage metering: the one way any domain records billable usage, counted once per idempotency key.

Callers pass a key derived from what they meter (`pipeline-run-{id}:build_minutes`,
`deployment-{id}`, `agent-task-{id}:tokens:{step}`), so a retried activity or request is a no-op.
The write joins the caller's transaction; the caller commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.periods import Period
from core.billing.pricing import USAGE_TYPES, USAGE_UNITS
from db.models.billing import UsageRecord


def _row(
    *,
    organization_id: uuid.UUID | str,
    project_id: uuid.UUID | str | None,
    usage_type: str,
    quantity: Decimal | int | float | str,
    idempotency_key: str,
    recorded_at: datetime | None,
    source_refs: Mapping[str, Any] | None,
    subscription_id: uuid.UUID | str | None,
) -> dict[str, Any]:
    if usage_type not in USAGE_TYPES:
        raise ValueError(f"unknown usage type {usage_type!r}; one of {', '.join(USAGE_TYPES)}")
    amount = Decimal(str(quantity))
    if amount < 0 or not amount.is_finite():
        raise ValueError(f"usage quantity must be a non-negative number, got {quantity!r}")
    if not idempotency_key or len(idempotency_key) > 255:
        raise ValueError("idempotency_key must be 1-255 characters")
    moment = (recorded_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "id": uuid.uuid4(),
        "organization_id": uuid.UUID(str(organization_id)),
        "project_id": uuid.UUID(str(project_id)) if project_id else None,
        "subscription_id": uuid.UUID(str(subscription_id)) if subscription_id else None,
        "usage_type": usage_type,
        "quantity": amount,
        "unit": USAGE_UNITS[usage_type],
        "recorded_at": moment,
        "period": Period.containing(moment).key,
        "idempotency_key": idempotency_key,
        "source_refs": dict(source_refs or {}),
    }


async def record_usage(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID | str,
    project_id: uuid.UUID | str | None,
    usage_type: str,
    quantity: Decimal | int | float | str,
    idempotency_key: str,
    recorded_at: datetime | None = None,
    source_refs: Mapping[str, Any] | None = None,
    subscription_id: uuid.UUID | str | None = None,
) -> bool:
    """Insert one usage record; False when this idempotency key was already recorded."""
    row = _row(
        organization_id=organization_id,
        project_id=project_id,
        usage_type=usage_type,
        quantity=quantity,
        idempotency_key=idempotency_key,
        recorded_at=recorded_at,
        source_refs=source_refs,
        subscription_id=subscription_id,
    )
    result = await session.execute(
        pg_insert(UsageRecord)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(UsageRecord.id)
    )
    return result.scalar_one_or_none() is not None


async def record_usage_on(
    conn: asyncpg.Connection,
    *,
    organization_id: uuid.UUID | str,
    project_id: uuid.UUID | str | None,
    usage_type: str,
    quantity: Decimal | int | float | str,
    idempotency_key: str,
    source_refs: Mapping[str, Any] | None = None,
) -> bool:
    """`record_usage` as one statement on a bare asyncpg connection (its own implicit
    transaction): for a hot path that already holds one, e.g. closing a pipeline run."""
    row = _row(
        organization_id=organization_id,
        project_id=project_id,
        usage_type=usage_type,
        quantity=quantity,
        idempotency_key=idempotency_key,
        recorded_at=None,
        source_refs=source_refs,
        subscription_id=None,
    )
    row["source_refs"] = json.dumps(row["source_refs"])  # the connection's JSONB codec: text
    # The columns are the row's keys (one list, `_row`'s), the values positional.
    columns = ", ".join(row)
    values = ", ".join(f"${n}" for n in range(1, len(row) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO usage_records ({columns}) VALUES ({values}) "  # noqa: S608  (own keys)
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        *row.values(),
    )
    return inserted is not None


async def record_usage_batch(session: AsyncSession, records: Sequence[Mapping[str, Any]]) -> int:
    """Many records in one statement (same arguments as record_usage); returns how many were new."""
    if not records:
        return 0
    rows = [
        _row(
            organization_id=r["organization_id"],
            project_id=r.get("project_id"),
            usage_type=r["usage_type"],
            quantity=r["quantity"],
            idempotency_key=r["idempotency_key"],
            recorded_at=r.get("recorded_at"),
            source_refs=r.get("source_refs"),
            subscription_id=r.get("subscription_id"),
        )
        for r in records
    ]
    result = await session.execute(
        pg_insert(UsageRecord)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(UsageRecord.id),
        rows,
    )
    return len(result.all())
