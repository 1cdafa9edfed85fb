"""What closing a period does to a subscription: it moves past the period, a trial ends (or
expires without a card), a cancellation at period end takes effect; an ended subscription leaves
the organization on Free."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core.billing import repository
from core.billing.periods import Period
from db.models.billing import Subscription
from forgeline.statuses.billing import SubscriptionStatus


async def move_to_free_plan(
    session: AsyncSession, subscription: Subscription, *, status: str, at: datetime
) -> None:
    """End `subscription` with `status` and put the organization on an active Free subscription."""
    subscription.status = status
    subscription.ended_at = at
    subscription.cancelled_at = subscription.cancelled_at or at
    await session.flush()
    free_id = await repository.free_plan_id(session)
    if free_id is None:
        return
    period = Period.containing(at)
    session.add(
        Subscription(
            organization_id=subscription.organization_id,
            plan_id=free_id,
            status=SubscriptionStatus.ACTIVE,
            current_period_start=at,
            current_period_end=period.end,
            stripe_customer_id=subscription.stripe_customer_id,
        )
    )


def trial_over(subscription: Subscription, period: Period) -> bool:
    """A trialing subscription whose trial ends by the end of `period`."""
    return subscription.status == SubscriptionStatus.TRIALING and (
        subscription.trial_end is None or subscription.trial_end <= period.end
    )


async def close_period(
    session: AsyncSession, subscription: Subscription, period: Period, *, expired_trial: bool
) -> None:
    """Advance the subscription past `period`: trial end, cancellation."""
    if subscription.current_period_end <= period.end:
        subscription.current_period_start = period.end
        subscription.current_period_end = period.next().end
    if trial_over(subscription, period):
        if expired_trial:
            await move_to_free_plan(
                session, subscription, status=SubscriptionStatus.EXPIRED, at=period.end
            )
            await repository.notify_owners(
                session,
                subscription.organization_id,
                kind="billing.trial_expired",
                title="Your trial ended",
                body="No payment method was on file; the organization is on the Free plan.",
                data={"subscription_id": str(subscription.id)},
            )
            return
        subscription.status = SubscriptionStatus.ACTIVE
    if subscription.cancel_at_period_end:
        await move_to_free_plan(
            session, subscription, status=SubscriptionStatus.CANCELLED, at=period.end
        )
