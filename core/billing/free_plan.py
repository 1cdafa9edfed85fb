"""New organizations start on the Free plan: an active Free subscription for the current month,
created by sign-up and the bootstrap when the plans are seeded (none when no plans exist)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.periods import Period
from db.models.billing import Subscription
from db.seed import plan_id_by_slug
from forgeline.statuses.billing import LIVE_SUBSCRIPTION_STATUSES

FREE_PLAN_SLUG = "free"


async def ensure_free_subscription(
    session: AsyncSession, organization_id: uuid.UUID, *, at: datetime | None = None
) -> Subscription | None:
    """Put the organization on an active Free subscription unless it already has a live one.

    Returns the new subscription, or None when nothing was created (a live subscription exists,
    or no Free plan is seeded). Joins the caller's transaction; the caller commits.
    """
    live = (
        await session.scalars(
            select(Subscription.id).where(
                Subscription.organization_id == organization_id,
                Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
            )
        )
    ).first()
    if live is not None:
        return None
    plan_id = await plan_id_by_slug(session, FREE_PLAN_SLUG)
    if plan_id is None:
        return None
    now = (at or datetime.now(UTC)).astimezone(UTC)
    subscription = Subscription(
        organization_id=organization_id,
        plan_id=plan_id,
        status="active",
        current_period_start=now,
        current_period_end=Period.containing(now).end,
    )
    session.add(subscription)
    await session.flush()
    return subscription
