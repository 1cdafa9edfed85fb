"""Billing queries: subscriptions, cards, invoices, the usage roll-up and the owners to notify.
Each joins the caller's transaction; the caller commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.periods import Period
from db.models.accounts import Notification, OrganizationMember
from db.models.billing import Invoice, PaymentMethod, Plan, Subscription
from forgeline.statuses.billing import LIVE_SUBSCRIPTION_STATUSES, SubscriptionStatus

# Subscriptions the monthly run closes a period for.
BILLABLE_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
)

# One statement: claim every unbilled usage record up to this period (late records of earlier
# periods included) for the invoice, and sum what was claimed by type.
ROLL_UP_SQL = text(
    """
    WITH billed AS (
        UPDATE usage_records SET invoice_id = :invoice_id
        WHERE organization_id = :organization_id AND invoice_id IS NULL AND period <= :period
        RETURNING usage_type, quantity
    )
    SELECT usage_type, sum(quantity) AS quantity FROM billed GROUP BY usage_type
    """
)
# The same claim when the plan changed during the period, summed per plan span as well: span i
# holds the records from the i-th change on (`thresholds` are the changes' times); records
# before the first change, late ones of earlier periods included, go to the first plan.
ROLL_UP_BY_SPAN_SQL = text(
    """
    WITH billed AS (
        UPDATE usage_records SET invoice_id = :invoice_id
        WHERE organization_id = :organization_id AND invoice_id IS NULL AND period <= :period
        RETURNING usage_type, quantity, recorded_at
    )
    SELECT usage_type, width_bucket(recorded_at, CAST(:thresholds AS timestamptz[])) AS span,
           sum(quantity) AS quantity
    FROM billed GROUP BY 1, 2
    """
)
# What an organization keeps in the object store at the close of a period: run artifacts not
# expired by then, and stage logs that were moved to the object store (short logs stay in
# Postgres chunks and are not billed as storage). Runs are reached through the organization's
# projects, both lookups served by indexes, so the roll-up never scans every run.
STORAGE_BYTES_SQL = text(
    """
    WITH runs AS (
        SELECT r.id FROM pipeline_runs r
        WHERE r.project_id IN (
                SELECT p.id FROM projects p WHERE p.organization_id = :organization_id
            )
          AND r.organization_id = :organization_id
    )
    SELECT
        (SELECT coalesce(sum(a.size_bytes), 0) FROM artifacts a
          WHERE a.run_id IN (SELECT id FROM runs)
            AND a.created_at < :period_end
            AND (a.expires_at IS NULL OR a.expires_at > :period_end))
      + (SELECT coalesce(sum(se.log_size_bytes), 0) FROM stage_executions se
          WHERE se.run_id IN (SELECT id FROM runs)
            AND se.log_object_key IS NOT NULL
            AND se.created_at < :period_end) AS stored_bytes
    """
)


@dataclass(frozen=True)
class UsageClaim:
    """Unbilled usage of an organization up to a period, claimed by one invoice."""

    invoice_id: uuid.UUID
    organization_id: uuid.UUID
    period: Period

    def params(self) -> dict[str, object]:
        return {
            "invoice_id": self.invoice_id,
            "organization_id": self.organization_id,
            "period": self.period.key,
        }


# --------------------------------------------------------------------------- subscriptions


async def live_subscription(
    session: AsyncSession, organization_id: uuid.UUID, *, lock: bool = False
) -> Subscription | None:
    """The organization's one live subscription (row-locked when `lock`), if any."""
    query = select(Subscription).where(
        Subscription.organization_id == organization_id,
        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
    )
    if lock:
        query = query.with_for_update()
    return (await session.scalars(query)).first()


async def latest_subscription(
    session: AsyncSession, organization_id: uuid.UUID
) -> Subscription | None:
    return (
        await session.scalars(
            select(Subscription)
            .where(Subscription.organization_id == organization_id)
            .order_by(Subscription.created_at.desc())
            .limit(1)
        )
    ).first()


async def free_plan_id(session: AsyncSession) -> uuid.UUID | None:
    return (await session.scalars(select(Plan.id).where(Plan.slug == "free"))).first()


async def due_organizations(
    session: AsyncSession, period: Period, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """One keyset page of organizations whose subscription has `period` to close (no invoice
    for it yet), in organization order after `after`."""
    query = (
        select(Subscription.organization_id)
        .where(
            Subscription.status.in_(BILLABLE_STATUSES),
            Subscription.current_period_start < period.end,
            ~select(Invoice.id)
            .where(
                Invoice.organization_id == Subscription.organization_id,
                Invoice.period_start == period.start,
            )
            .exists(),
        )
        .order_by(Subscription.organization_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Subscription.organization_id > after)
    return list((await session.scalars(query)).all())


# --------------------------------------------------------------------------- cards


async def default_card_id(session: AsyncSession, organization_id: uuid.UUID) -> uuid.UUID | None:
    """The organization's default card that is still attached, if any."""
    return (
        await session.scalars(
            select(PaymentMethod.id).where(
                PaymentMethod.organization_id == organization_id,
                PaymentMethod.is_default.is_(True),
                PaymentMethod.detached_at.is_(None),
            )
        )
    ).first()


async def has_default_card(session: AsyncSession, organization_id: uuid.UUID) -> bool:
    return await default_card_id(session, organization_id) is not None


# --------------------------------------------------------------------------- invoices


async def invoice_of_period(
    session: AsyncSession, organization_id: uuid.UUID, period: Period
) -> Invoice | None:
    return (
        await session.scalars(
            select(Invoice).where(
                Invoice.organization_id == organization_id,
                Invoice.period_start == period.start,
            )
        )
    ).first()


async def credit_carried_from(
    session: AsyncSession, organization_id: uuid.UUID, period: Period
) -> Decimal | None:
    """The credit the invoice of `period` carried forward to the next one, if any."""
    return (
        await session.scalars(
            select(Invoice.credit_carried_forward).where(
                Invoice.organization_id == organization_id,
                Invoice.period_start == period.start,
            )
        )
    ).first()


async def invoice_for_update(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice:
    return (
        await session.scalars(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    ).one()


# --------------------------------------------------------------------------- usage


async def roll_up(session: AsyncSession, claim: UsageClaim) -> dict[str, Decimal]:
    """Claim the unbilled usage for the invoice; the quantity claimed per usage type."""
    rows = await session.execute(ROLL_UP_SQL, claim.params())
    return {row.usage_type: Decimal(row.quantity) for row in rows}


async def roll_up_by_span(
    session: AsyncSession, claim: UsageClaim, changes: list[datetime]
) -> list[dict[str, Decimal]]:
    """The same claim, the quantities split at the plan changes' times (`changes`): one mapping
    per plan span, len(changes) + 1 in all."""
    usage: list[dict[str, Decimal]] = [{} for _ in range(len(changes) + 1)]
    rows = await session.execute(ROLL_UP_BY_SPAN_SQL, {**claim.params(), "thresholds": changes})
    for row in rows:
        bucket = usage[min(max(int(row.span), 0), len(usage) - 1)]
        bucket[row.usage_type] = bucket.get(row.usage_type, Decimal(0)) + Decimal(row.quantity)
    return usage


async def stored_bytes(session: AsyncSession, organization_id: uuid.UUID, at: datetime) -> int:
    """Bytes the organization keeps in the object store at `at` (artifacts and moved logs)."""
    found = await session.scalar(
        STORAGE_BYTES_SQL, {"organization_id": organization_id, "period_end": at}
    )
    return int(found or 0)


# --------------------------------------------------------------------------- notifications


async def owner_user_ids(session: AsyncSession, organization_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(OrganizationMember.user_id).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.role == "owner",
        )
    )
    return list(rows.all())


async def notify_owners(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    kind: str,
    title: str,
    body: str,
    data: dict[str, object],
) -> None:
    """One notification per owner of the organization."""
    for user_id in await owner_user_ids(session, organization_id):
        session.add(
            Notification(
                user_id=user_id,
                organization_id=organization_id,
                type=kind,
                title=title,
                body=body,
                data=data,
            )
        )
