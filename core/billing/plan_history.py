"""A subscription's plan over time: plan changes apply at once and are recorded in order, and an
invoice reads back which plan was in effect for which part of its period."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.periods import Period
from db.models.billing import Subscription, SubscriptionPlanChange


@dataclass(frozen=True)
class PlanSpan:
    """`plan_id` was the subscription's plan from `start` (inclusive) to `end` (exclusive)."""

    plan_id: uuid.UUID
    start: datetime
    end: datetime


async def change_plan(
    session: AsyncSession, subscription: Subscription, plan_id: uuid.UUID
) -> datetime | None:
    """Put `subscription` on `plan_id` now and record the change; returns when it took effect,
    None when it already was on that plan.

    The caller holds the subscription's row lock (SELECT ... FOR UPDATE), so concurrent changes
    are recorded one after another, each from the plan the previous one left; the time is the
    database's clock, the one every API process shares.
    """
    if subscription.plan_id == plan_id:
        return None
    changed_at = (
        await session.execute(
            pg_insert(SubscriptionPlanChange)
            .values(
                subscription_id=subscription.id,
                organization_id=subscription.organization_id,
                from_plan_id=subscription.plan_id,
                to_plan_id=plan_id,
                changed_at=func.clock_timestamp(),
            )
            .returning(SubscriptionPlanChange.changed_at)
        )
    ).scalar_one()
    subscription.plan_id = plan_id
    subscription.pending_plan_id = None
    subscription.pending_change_at = None
    await session.flush()
    return changed_at


async def plan_spans(
    session: AsyncSession, subscription: Subscription, period: Period
) -> list[PlanSpan]:
    """The plans of `subscription` across `period`, in order, covering it without gaps (the
    first span starts at the period's start even when the subscription started later).

    The plan at the period's start is the one the first later change left; changes after the
    period's end only tell what the plan was before them.
    """
    changes = (
        await session.scalars(
            select(SubscriptionPlanChange)
            .where(
                SubscriptionPlanChange.subscription_id == subscription.id,
                SubscriptionPlanChange.changed_at >= period.start,
            )
            .order_by(SubscriptionPlanChange.seq)
        )
    ).all()
    plan_id = changes[0].from_plan_id if changes else subscription.plan_id
    spans: list[PlanSpan] = []
    start = period.start
    for change in changes:
        # Recorded order wins over a clock that stepped back between two changes.
        at = min(max(change.changed_at, start), period.end)
        if at >= period.end:
            break
        if at > start:
            spans.append(PlanSpan(plan_id, start, at))
        plan_id, start = change.to_plan_id, at
    spans.append(PlanSpan(plan_id, start, period.end))
    return spans
